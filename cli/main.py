"""The ``dspt-geo`` command group: logging, error reporting, subcommands."""

import logging
from typing import Any

import click

from dspt_geo import __version__
from dspt_geo.errors import DsptGeoError

from .info import info


class DsptGeoGroup(click.Group):
    """Click group that reports user errors in one line, without a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand, turning :class:`DsptGeoError` into a usage-style exit."""
        try:
            return super().invoke(ctx)
        except DsptGeoError as error:
            raise click.ClickException(str(error)) from error


@click.group(cls=DsptGeoGroup, context_settings={'help_option_names': ['-h', '--help']})
@click.option('-v', '--verbose', count=True, help='More log output (-vv for debug).')
@click.option('-q', '--quiet', is_flag=True, help='Only errors on stderr.')
@click.version_option(__version__, prog_name='dspt-geo')
def cli(verbose: int, quiet: bool) -> None:
    """Continued MAE pre-training and fine-tuning of ViTs on your own rasters.

    Point `info` at raster folders to see how they will be read.
    """
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO)[min(verbose, 1)]
    if verbose >= 2:
        level = logging.DEBUG
    logging.basicConfig(level=level, format='%(levelname)s: %(message)s', force=True)
    # GDAL's own warnings (TIFF tag quirks and the like) only with -vv.
    logging.getLogger('rasterio').setLevel(
        logging.DEBUG if verbose >= 2 else logging.ERROR
    )


cli.add_command(info)
