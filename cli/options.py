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

    Options left at their defaults are left out, so that the file's setting, else
    the configuration dataclass's default, applies: the dataclasses in
    :mod:`dspt_geo.train.config` hold the defaults, an option's ``default`` only
    shows it in ``--help`` (tests/cli/test_option_defaults.py checks they agree).

    Args:
        ctx: the command's context.
        settings: the configuration file's settings (changed in place).
        options: the command's options by parameter name.

    Returns:
        *settings*.
    """
    defaults = (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)
    for name, value in options.items():
        if ctx.get_parameter_source(name) not in defaults:
            settings[name] = value
    return settings


class MultiValueOption(click.Option):
    """An option taking one or more values, as ``--images a.tif b.tif`` (a shell glob).

    It takes the words after it up to the next option; it may also be repeated.
    Its command must be a :class:`MultiValueCommand`, which spreads the words.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Initialise the option (always ``multiple``)."""
        kwargs['multiple'] = True
        super().__init__(*args, **kwargs)


class MultiValueCommand(click.Command):
    """A command whose :class:`MultiValueOption` options take the words after them.

    Before parsing, ``--images a.tif b.tif --out run`` is read as
    ``--images a.tif --images b.tif --out run``: each word after such an option, up
    to the next word starting with ``-`` (or ``--``), repeats the option.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Spread the values of multi-value options, then parse as usual."""
        names = {
            name
            for param in self.params
            if isinstance(param, MultiValueOption)
            for name in param.opts
        }
        spread: list[str] = []
        option, own_value = None, False
        for index, word in enumerate(args):
            if own_value:  # the word right after the option is its value anyway
                own_value = False
            elif word == '--':
                spread.extend(args[index:])
                break
            elif option is not None and not word.startswith('-'):
                spread.append(option)
            else:
                name, sep, _ = word.partition('=')
                option = name if name in names else None
                own_value = option is not None and not sep
            spread.append(word)
        return super().parse_args(ctx, spread)


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
