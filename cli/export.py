"""``dspt-geo export``: a fine-tuned model for other runtimes (ONNX)."""

import click


@click.command()
@click.argument('model', type=click.Path(exists=True, dir_okay=False))
@click.option(
    '--onnx',
    'onnx_path',
    required=True,
    type=click.Path(dir_okay=False, writable=True),
    help='The .onnx file to write: raw band values in (float32, N x C x tile x tile), '
    'class probabilities out; settings as metadata that QGIS Deepness reads.',
)
@click.option('--overwrite', is_flag=True, help='Replace an existing output file.')
@click.option(
    '--no-check',
    is_flag=True,
    help='Skip comparing onnxruntime with torch on a random tile after the export.',
)
def export(model: str, onnx_path: str, overwrite: bool, no_check: bool) -> None:
    """Export MODEL (a fine-tuned model.safetensors) to ONNX.

    Classification and segmentation models export; normalisation (training
    statistics, nodata) is folded into the graph, so its input is the raster's raw
    band values. Needs the onnx extra: pip install 'dspt-geo[onnx]'.
    """
    from dspt_geo.export import export_onnx

    path = export_onnx(model, onnx_path, overwrite=overwrite, check=not no_check)
    click.echo(str(path))
