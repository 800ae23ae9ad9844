"""``dspt-geo info``: what the tool sees in raster folders."""

import json
import logging

import click

from .options import crs_option, nodata_option, res_option, sar_mode_option

logger = logging.getLogger(__name__)


@click.command()
@click.argument('paths', nargs=-1, type=click.Path(exists=True))
@click.option(
    '--stats',
    is_flag=True,
    help='Also estimate per-band normalisation statistics (cached).',
)
@click.option(
    '--json', 'as_json', is_flag=True, help='Print one JSON document instead of text.'
)
@crs_option
@res_option
@nodata_option
@sar_mode_option
def info(
    paths: tuple[str, ...],
    stats: bool,
    as_json: bool,
    crs: str | None,
    res: float | None,
    nodata: float | None,
    sar_mode: str,
) -> None:
    """Describe the sensor groups found in PATHS (folders, searched recursively, or files).

    Without PATHS, describes the built-in sample (a synthetic optical and SAR landscape).
    """
    from dspt_geo.data.summary import describe_rasters, format_description

    if not paths:
        from dspt_geo.data.synthetic import builtin_sample

        paths = (str(builtin_sample()),)
        logger.warning('no PATH given: describing the built-in sample in %s', paths[0])
    description = describe_rasters(
        paths, crs=crs, res=res, nodata=nodata, sar_mode=sar_mode, stats=stats
    )
    click.echo(
        json.dumps(description, indent=2)
        if as_json
        else format_description(description)
    )
