"""``dspt-geo demo``: the whole pipeline on built-in data, in minutes on a CPU."""

import logging
from pathlib import Path

import click

from .logs import route_lightning_logs

#: Said at the end of every demo (issue #6).
HONEST = (
    'Note: a demo model trained for minutes on a CPU shows the pipeline, not the '
    'accuracy of a real run.'
)


@click.command()
@click.argument('out_dir', required=False, default='dspt-geo-demo', type=click.Path())
@click.option('--overwrite', is_flag=True, help='Replace a previous demo in OUT_DIR.')
@click.option(
    '--quick',
    is_flag=True,
    help='Tiny data and a few steps per stage (seconds): checks the installation, the result means nothing.',
)
def demo(out_dir: str, overwrite: bool, quick: bool) -> None:
    """Run the whole pipeline on built-in data and write results for QGIS.

    With no network and no files of yours, in a few minutes on a CPU: writes a
    synthetic landscape (optical and SAR rasters, land-cover and building labels),
    pre-trains a small ViT (MAE) on the unlabelled rasters, fine-tunes it for
    segmentation and detection, predicts over a larger scene, and writes the
    GeoTIFF mask, the GeoPackage detections, their QGIS styles, a .qgz project
    and a PNG quick-look to OUT_DIR (default: ./dspt-geo-demo).
    """
    from dspt_geo.demo import run_demo

    route_lightning_logs()
    library = logging.getLogger('dspt_geo')
    previous = library.level
    quiet = logging.getLogger().level > logging.WARNING
    if not quiet and library.getEffectiveLevel() > logging.INFO:
        library.setLevel(logging.INFO)  # the demo's progress, unless -q
    try:
        result = run_demo(out_dir, overwrite=overwrite, quick=quick)
    finally:
        library.setLevel(previous)

    out = result.out_dir
    click.echo(f'\nThe dspt-geo demo wrote to {out}/:')
    rows = [
        ('land-cover mask (COG)', result.mask),
        ('building detections (GeoPackage)', result.detections),
        *(('QGIS style', style) for style in result.styles),
        ('QGIS project', result.project),
        ('quick-look', result.quicklook),
        ('scene predicted over', result.scene),
        *((f'{name} model', path) for name, path in result.models.items()),
    ]
    width = max(len(label) for label, _ in rows)
    for label, path in rows:
        click.echo(f'  {label:<{width}}  {path}')
    click.echo(f'  ({result.detection_count} detections)')
    click.echo(
        '\nThe probe (runs/probe/probe.png): is the pre-trained encoder better than '
        'random initialisation on labelled chips?'
    )
    click.echo(result.probe_table)
    click.echo('\nTo open it:')
    click.echo(f'  qgis {result.project}')
    click.echo(
        f'  or drag {Path(result.mask).name} and {Path(result.detections).name} '
        'into QGIS (their .qml styles load with them);'
    )
    click.echo(f'  the quick-look is {result.quicklook}.')
    timings = ', '.join(
        f'{stage} {seconds:.0f} s'
        for stage, seconds in result.timings.items()
        if stage != 'total'
    )
    click.echo(f'\nTimings: {timings}; total {result.timings["total"]:.0f} s.')
    click.echo(f'\n{HONEST}')
