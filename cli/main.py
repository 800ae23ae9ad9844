"""The ``dspt-geo`` command group: logging, error reporting, subcommands."""

from typing import Any

import click

from dspt_geo import __version__
from dspt_geo.errors import DsptGeoError, RunInterruptedError

from .demo import demo
from .evaluate import evaluate
from .export import export
from .finetune import finetune
from .info import info
from .logs import configure_logging
from .predict import predict
from .pretrain import pretrain
from .probe import probe
from .qgis_plugin import qgis_plugin


class DsptGeoGroup(click.Group):
    """Click group that reports user errors in one line, without a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand, turning :class:`DsptGeoError` into a usage-style exit.

        A run stopped by a signal says how to resume and exits with 128 + the
        signal (143 for SIGTERM), as a shell reports a killed process; Ctrl+C
        before a run has anything to save exits with 130.
        """
        try:
            return super().invoke(ctx)
        except RunInterruptedError as stop:
            click.echo(f'Stopped: {stop}', err=True)
            ctx.exit(stop.exit_code)
        except KeyboardInterrupt:
            click.echo('Stopped: interrupted (Ctrl+C)', err=True)
            ctx.exit(130)
        except DsptGeoError as error:
            raise click.ClickException(str(error)) from error


@click.group(cls=DsptGeoGroup, context_settings={'help_option_names': ['-h', '--help']})
@click.option('-v', '--verbose', count=True, help='More log output (-vv for debug).')
@click.option('-q', '--quiet', is_flag=True, help='Only errors on stderr.')
@click.version_option(__version__, prog_name='dspt-geo')
def cli(verbose: int, quiet: bool) -> None:
    """Continued MAE pre-training and fine-tuning of ViTs on your own rasters.

    Point `info` at raster folders to see how they will be read; `pretrain`
    continues MAE pre-training on them, `finetune` fine-tunes on labelled data,
    `evaluate` scores a fine-tuned model, `probe` judges encoders by frozen-feature
    classifiers at few labels.
    """
    configure_logging(verbose, quiet)


cli.add_command(info)
cli.add_command(pretrain)
cli.add_command(finetune)
cli.add_command(evaluate)
cli.add_command(probe)
cli.add_command(predict)
cli.add_command(demo)
cli.add_command(export)
cli.add_command(qgis_plugin)
