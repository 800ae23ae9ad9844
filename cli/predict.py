"""``dspt-geo predict``: a fine-tuned model over whole scenes, for QGIS."""

from typing import Literal

import click

from .logs import route_lightning_logs


def _tile(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> int | Literal['auto'] | None:
    """``--tile``: a window size of at least 8 pixels, or ``auto``."""
    if value is None:
        return None
    if value == 'auto':
        return 'auto'
    try:
        size = int(value)
    except ValueError:
        size = 0
    if size < 8:
        msg = f'{value!r} is neither auto nor a window size of at least 8 pixels'
        raise click.BadParameter(msg, ctx=ctx, param=param)
    return size


@click.command()
@click.argument('scenes', nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    '--model',
    'model_file',
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help='model.safetensors from `dspt-geo finetune`.',
)
@click.option(
    '--out',
    type=click.Path(),
    help='Output file (one scene: .tif for masks and classes; .gpkg, .geojson or .fgb for detections) or folder. Default: beside each scene, <name>_mask.tif / _classes.tif / _detections.gpkg.',
)
@click.option(
    '--tile',
    callback=_tile,
    metavar='PIXELS|auto',
    help="Window size in pixels (default: the model's training tile), or auto: the "
    'fastest of larger windows the model takes (ViTs), timed on this machine.',
)
@click.option(
    '--overlap',
    type=click.IntRange(min=0),
    help="Overlap of neighbouring windows in pixels (default: the model's).",
)
@click.option(
    '--batch-size',
    type=click.IntRange(min=1),
    help='Windows per model call (default: about 131,072 pixels per call, e.g. 32 '
    'windows of 64 px or 2 of 256 px; at least 8 on a GPU).',
)
@click.option(
    '--device',
    help='Torch device, e.g. cuda, cuda:1, cpu (default: cuda when present, else cpu).',
)
@click.option(
    '--devices',
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help='Processes sharing the scenes (one per GPU). Under torchrun, its processes share them.',
)
@click.option(
    '--probabilities',
    is_flag=True,
    help='Also write a per-class probability raster (segment, classify).',
)
@click.option(
    '--score-threshold',
    type=click.FloatRange(0, 1),
    help="Keep detections scoring at least this (default: the model's).",
)
@click.option(
    '--qgis-project',
    type=click.Path(),
    help='Also write a QGIS project (.qgz) with the scene and the styled outputs (one scene).',
)
@click.option(
    '--max-objects',
    type=click.IntRange(min=0),
    help='detect: most objects in one training tile; sizes the detections (2 per '
    'object + 8) and proposals (10 per detection) per window, scaled to the window '
    'area (default: counted from the training labels, stored in the model file).',
)
@click.option('--overwrite', is_flag=True, help='Replace existing outputs.')
@click.option('--no-progress', is_flag=True, help='No progress bar.')
def predict(
    scenes: tuple[str, ...],
    model_file: str,
    out: str | None,
    tile: int | Literal['auto'] | None,
    overlap: int | None,
    batch_size: int | None,
    device: str | None,
    devices: int,
    probabilities: bool,
    score_threshold: float | None,
    qgis_project: str | None,
    max_objects: int | None,
    overwrite: bool,
    no_progress: bool,
) -> None:
    """Run a fine-tuned model over SCENES (files or folders) of any size.

    Writes a Cloud-Optimized GeoTIFF class mask (segment), a coarse class grid
    (classify) or GeoPackage detections (detect), each with a .qml style that QGIS
    applies when the file is opened. Prints the written files.
    """
    from dspt_geo.allocator import keep_freed_memory
    from dspt_geo.predict.scenes import PredictOptions, predict_scenes

    route_lightning_logs()
    keep_freed_memory()
    options = PredictOptions(
        batch_size=batch_size,
        tile=tile,
        overlap=overlap,
        probabilities=probabilities,
        score_threshold=score_threshold,
        overwrite=overwrite,
        progress=not no_progress,
        max_objects=max_objects,
    )
    results = predict_scenes(
        scenes, model_file, out, options=options, device=device, devices=devices,
        qgis_project=qgis_project,
    )  # fmt: skip
    for result in results:
        for path in result.paths:
            click.echo(path)
    if qgis_project:
        click.echo(qgis_project)
