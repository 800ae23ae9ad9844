"""``dspt-geo info``: what the tool sees in raster and chip folders."""

import json
import logging

import click

from dspt_geo.data import SarMode

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
    sar_mode: SarMode,
) -> None:
    """Describe the sensor groups found in PATHS (folders, searched recursively, or files).

    Georeferenced rasters form sensor groups by band layout; rasters without a CRS
    (JPEG, PNG, TIFF chips) form chip groups, each chip a sample of its own.

    A model file (.safetensors, e.g. RUN_DIR/pretrained.safetensors) is described
    instead: architecture, sensor groups and their statistics, training summary.
    Without PATHS, describes the built-in sample (a synthetic optical and SAR landscape).
    """
    from dspt_geo.data.summary import describe_rasters, format_description

    models = [p for p in paths if p.endswith('.safetensors')]
    if models:
        from dspt_geo.models.summary import (
            describe_model_file,
            format_model_description,
        )

        described = [describe_model_file(p) for p in models]
        if as_json:
            click.echo(
                json.dumps(described if len(described) > 1 else described[0], indent=2)
            )
        else:
            click.echo('\n\n'.join(format_model_description(d) for d in described))
        paths = tuple(p for p in paths if p not in models)
        if not paths:
            return
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
