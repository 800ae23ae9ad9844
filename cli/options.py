"""Options shared by several commands."""

from collections.abc import Callable
from typing import Any

import click
import yaml
from click.core import ParameterSource

from dspt_geo.data import SAR_MODES

crs_option = click.option(
    '--crs',
    metavar='CRS',
    help='CRS to sample every sensor group in (EPSG:XXXX, WKT or PROJ); default: '
    'per group, the CRS holding most of its pixels.',
)
res_option = click.option(
    '--res',
    type=click.FloatRange(min=0, min_open=True),
    help='Pixel size to sample at, in CRS units; default: per group, the median '
    'pixel size of its files.',
)
nodata_option = click.option(
    '--nodata',
    type=float,
    help="Nodata value for every file, overriding the files' own.",
)
sar_mode_option = click.option(
    '--sar-mode',
    type=click.Choice(SAR_MODES),
    default='auto',
    show_default=True,
    help='Backscatter scale of SAR groups (complex, or real bands named VV/VH/HH/HV): '
    'auto and db give dB (linear power: 10 log10, amplitude and integer DN: 20 log10, '
    'complex: 10 log10 |z|^2, dB data as stored; the stored scale is told from the '
    'values: negatives mean dB, integers or a median above 1 amplitude, other floats '
    'linear power), amplitude and intensity give linear amplitude or power.',
)


def key_values(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, Any]:
    """Parse repeated KEY=VALUE pairs; values are read as YAML scalars."""
    parsed = {}
    for item in values:
        key, sep, value = item.partition('=')
        if not sep or not key:
            raise click.BadParameter(f'{item!r} is not KEY=VALUE', ctx, param)
        parsed[key.replace('-', '_')] = yaml.safe_load(value)
    return parsed


def merge_settings(
    ctx: click.Context, settings: dict[str, Any], options: dict[str, Any]
) -> dict[str, Any]:
    """Settings of a ``--config`` file overridden by the options given explicitly.

    Options left at their defaults fill only what the file leaves open; empty
    ``KEY=VALUE`` lists never replace the file's.

    Args:
        ctx: the command's context.
        settings: the configuration file's settings (changed in place).
        options: the command's options by parameter name.

    Returns:
        *settings*.
    """
    for name, value in options.items():
        explicit = ctx.get_parameter_source(name) is not ParameterSource.DEFAULT
        if explicit or name not in settings:
            if isinstance(value, dict) and not value and name in settings:
                continue
            settings[name] = value
    return settings


class MultiValueOption(click.Option):
    """An option taking one or more values, as ``--images a.tif b.tif`` (a shell glob).

    It takes the words after it up to the next option; it may also be repeated.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Initialise the option (always ``multiple``)."""
        kwargs['multiple'] = True
        super().__init__(*args, **kwargs)

    def add_to_parser(self, parser: Any, ctx: click.Context) -> None:
        """Register the option, then make its parser take the words that follow."""
        super().add_to_parser(parser, ctx)
        registered = getattr(parser, '_long_opt', {})
        for name in self.opts:
            option = registered.get(name)
            if option is None:
                continue
            store = option.process

            def process(value: Any, state: Any, store: Any = store) -> None:
                store(value, state)
                while state.rargs and not state.rargs[0].startswith('-'):
                    store(state.rargs.pop(0), state)

            option.process = process


def hardware_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Lightning's hardware options and the data-loading workers."""
    options = [
        click.option(
            '--accelerator',
            default='auto',
            show_default=True,
            help='Lightning accelerator: auto, cpu, gpu, ...',
        ),
        click.option(
            '--devices',
            default='auto',
            show_default=True,
            help='Devices per node: a number, a list such as 0,1, or auto.',
        ),
        click.option(
            '--num-nodes',
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help='Nodes (under SLURM or torchrun).',
        ),
        click.option(
            '--strategy',
            default='auto',
            show_default=True,
            help='Lightning strategy: auto, ddp, ddp_spawn, fsdp, ...',
        ),
        click.option(
            '--precision',
            help='Lightning precision (default: bf16-mixed on a GPU, 32-true on the CPU).',
        ),
        click.option(
            '--num-workers',
            type=click.IntRange(min=0),
            default=2,
            show_default=True,
            help='Data-loading worker processes per training process.',
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def run_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Options every training command shares: length, schedule, run folder."""
    options = [
        click.option(
            '--config',
            'config_file',
            type=click.Path(exists=True, dir_okay=False),
            help='YAML configuration (as written to RUN_DIR/config.yaml); options given here override it.',
        ),
        click.option(
            '--steps',
            type=click.IntRange(min=1),
            help='Length in optimiser steps (takes precedence over --epochs).',
        ),
        click.option(
            '--weight-decay',
            type=click.FloatRange(min=0),
            default=0.05,
            show_default=True,
            help='AdamW weight decay (not on norms, biases, embeddings, tokens).',
        ),
        click.option(
            '--warmup-steps',
            type=click.IntRange(min=0),
            help='Linear warmup steps (default: 5% of the run).',
        ),
        click.option(
            '--checkpoint-every',
            type=click.IntRange(min=1),
            default=500,
            show_default=True,
            help='Save a checkpoint every this many steps (and at the end).',
        ),
        click.option(
            '--log-every',
            type=click.IntRange(min=1),
            default=10,
            show_default=True,
            help='Write a row of metrics.csv every this many steps.',
        ),
        click.option(
            '--logger',
            type=click.Choice(('none', 'csv', 'tensorboard', 'mlflow')),
            default='none',
            show_default=True,
            help="Lightning logger beside metrics.csv: csv (RUN_DIR/logs/csv), tensorboard (RUN_DIR/logs/tensorboard; pip install 'dspt-geo[tensorboard]') or mlflow (MLFLOW_TRACKING_URI, else RUN_DIR/logs/mlruns; pip install 'dspt-geo[mlflow]'); images (previews, confusion matrices) go to tensorboard and mlflow.",
        ),
        click.option(
            '--resume',
            is_flag=True,
            help='Continue a finished run (give a larger --steps/--epochs); unfinished runs resume anyway.',
        ),
        click.option(
            '--overwrite', is_flag=True, help='Delete the run in --out and start over.'
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function
