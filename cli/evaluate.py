"""``dspt-geo evaluate``: the standard metrics of a fine-tuned model on labelled data."""

import logging

import click

from .options import MultiValueCommand, MultiValueOption

logger = logging.getLogger(__name__)


@click.command(cls=MultiValueCommand)
@click.argument('model', type=click.Path(exists=True, dir_okay=False))
@click.option(
    '--images',
    cls=MultiValueOption,
    type=click.Path(exists=True),
    required=True,
    help='Image rasters or folders, chip folders, or a folder (or .zip) of class folders; several may follow.',
)
@click.option(
    '--labels',
    cls=MultiValueOption,
    type=click.Path(exists=True),
    help='Labels, in any form dspt-geo finetune reads; not needed for class folders.',
)
@click.option(
    '--class-column',
    metavar='NAME',
    help='Column of vector or table labels holding the class.',
)
@click.option(
    '--split',
    type=click.Choice(('all', 'train', 'val', 'test')),
    default='all',
    show_default=True,
    help='Score every labelled sample, or the train/val/test split as the fine-tuning run drew it (its split setting and seed are in the model file).',
)
@click.option(
    '--json',
    'json_file',
    type=click.Path(),
    help='Also write the report as JSON to this file (and, for classification, the confusion matrix as FILE_confusion.png beside it).',
)
@click.option(
    '--batch-size',
    type=click.IntRange(min=1),
    help="Chips or windows per batch (default: the fine-tuning run's; 8 on scenes, as predict).",
)
@click.option(
    '--tile',
    type=click.IntRange(min=8),
    help="Window size in pixels on scenes, as predict --tile (default: the model's training tile).",
)
@click.option(
    '--overlap',
    type=click.IntRange(min=0),
    help="Overlap of neighbouring windows in pixels, as predict --overlap (default: the model's).",
)
@click.option('--no-progress', is_flag=True, help='No progress bar.')
@click.option(
    '--num-workers',
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help='Data-loading worker processes.',
)
def evaluate(
    model: str,
    images: tuple[str, ...],
    labels: tuple[str, ...],
    class_column: str | None,
    split: str,
    json_file: str | None,
    batch_size: int | None,
    tile: int | None,
    overlap: int | None,
    no_progress: bool,
    num_workers: int,
) -> None:
    """Score MODEL (a fine-tuned model.safetensors) on labelled data.

    Classification: overall and per-class accuracy, confusion matrix. Segmentation:
    mIoU, per-class IoU and F1; on scenes, of exactly the mask `dspt-geo predict`
    writes (same windows, blending, --tile and --overlap). Detection: COCO mAP@0.5
    and mAP@[.5:.95], overall and per class. --split val reproduces the metric the
    fine-tuning run logged, in the windows its validation used.
    """
    from dspt_geo.outputs import check_output_path
    from dspt_geo.train.evaluate import evaluate as run_evaluation
    from dspt_geo.train.evaluate import format_report, write_report

    if json_file:
        check_output_path(json_file, '--json')
    report = run_evaluation(
        model,
        list(images),
        list(labels),
        class_column,
        split=split,  # type: ignore[arg-type]
        batch_size=batch_size,
        num_workers=num_workers,
        tile=tile,
        overlap=overlap,
        progress=not no_progress,
    )
    if json_file:
        for path in write_report(report, json_file):
            logger.info('wrote %s', path)
    click.echo(format_report(report))
