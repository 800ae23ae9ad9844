"""``dspt-geo probe``: judge encoders by frozen-feature classifiers at few labels."""

import logging
from pathlib import Path

import click

from .options import MultiValueCommand, MultiValueOption

logger = logging.getLogger(__name__)


def _split(ctx: click.Context, param: click.Parameter, value: str) -> object:
    """Read --split as finetune does (usage error when unknown)."""
    from dspt_geo.errors import ConfigError
    from dspt_geo.train.config import parse_split

    try:
        spec = parse_split(value)
    except ConfigError as error:
        raise click.BadParameter(str(error), ctx, param) from None
    if spec is None:
        raise click.BadParameter('a probe needs a held-out test split', ctx, param)
    return spec


@click.command(cls=MultiValueCommand)
@click.argument('encoders', nargs=-1, required=True)
@click.option(
    '--images',
    cls=MultiValueOption,
    type=click.Path(exists=True),
    required=True,
    help='Labelled images as finetune reads them: for classify a folder (or .zip) of class folders, chip folders, or images with --labels; for segment image chips or rasters with --labels; several may follow.',
)
@click.option(
    '--labels',
    cls=MultiValueOption,
    type=click.Path(exists=True),
    help='Labels: a CSV of chips or points, vectors, ...; not needed for class folders. For --task segment: label rasters, mask chips or vectors over the rasters.',
)
@click.option(
    '--task',
    type=click.Choice(('classify', 'segment')),
    default='classify',
    show_default=True,
    help='classify: one class per chip, features pooled, scored as accuracy. segment: a class per patch token (the majority of its labelled pixels; unlabelled, ignored and nodata pixels count for nothing), scored as mIoU over the test pixels, each patch painted with its class; --label-fraction then draws whole chips or scene windows, stratified by their dominant class.',
)
@click.option(
    '--class-column',
    metavar='NAME',
    help='Column of table or vector labels holding the class.',
)
@click.option(
    '--split',
    default='auto',
    show_default=True,
    callback=_split,
    help='Train/validation/test split: auto (train/val/test folders, else spatial blocks, else random), folder, column:NAME, blocks, blocks:SIZE or random. Random and block splits hold out 20 % for validation and 20 % for the test.',
)
@click.option(
    '--out',
    type=click.Path(file_okay=False),
    required=True,
    help='Folder of probe.json, probe.png and the feature cache (features are extracted once per encoder file and data).',
)
@click.option(
    '--label-fraction',
    'fractions',
    cls=MultiValueOption,
    type=click.FloatRange(0, 1, min_open=True),
    help='Shares of the training labels to fit on, stratified per class with at least one per class (the validation labels are drawn alike; segment: shares of the chips or windows); several may follow.  [default: 0.01 0.1 1.0]',
)
@click.option(
    '--seeds',
    cls=MultiValueOption,
    type=int,
    help='Seeds of the label draws; the table shows mean ± sd over them.  [default: 0 1 2]',
)
@click.option(
    '--head',
    'heads',
    type=click.Choice(('knn', 'logistic')),
    multiple=True,
    help='Classifier on the frozen features, repeatable: knn (k=20, cosine, weighted votes as DINO) and logistic (L2 penalty chosen on the validation split).  [default: both]',
)
@click.option(
    '--pool',
    type=click.Choice(('mean', 'cls')),
    default='mean',
    show_default=True,
    help='Features of classify: the mean of the patch tokens, or the class token (segment uses each patch token).',
)
@click.option(
    '--no-baseline',
    is_flag=True,
    help="Do not add the random-initialisation baseline (random, the first encoder file's architecture).",
)
@click.option(
    '--image-size',
    type=click.IntRange(min=8),
    help="Resample chips to this side in pixels (default: the first encoder's training size).",
)
@click.option(
    '--batch-size',
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help='Chips per forward pass.',
)
@click.option(
    '--num-workers',
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help='Data-loading worker processes.',
)
@click.option(
    '--json',
    'as_json',
    is_flag=True,
    help='Print the whole report as JSON instead of the table.',
)
@click.option(
    '--seed',
    type=int,
    default=0,
    show_default=True,
    help='Seed of the split and of the random-initialisation baseline.',
)
def probe(
    encoders: tuple[str, ...],
    images: tuple[str, ...],
    labels: tuple[str, ...],
    class_column: str | None,
    task: str,
    split: object,
    out: str,
    fractions: tuple[float, ...],
    seeds: tuple[int, ...],
    heads: tuple[str, ...],
    pool: str,
    no_baseline: bool,
    image_size: int | None,
    batch_size: int,
    num_workers: int,
    as_json: bool,
    seed: int,
) -> None:
    """Probe frozen ENCODERS on labelled data: did pre-training help?

    ENCODERS are pretrained.safetensors (dspt-geo pretrain), model.safetensors
    (dspt-geo finetune), a pre-training run's checkpoints (RUN_DIR/checkpoints/
    *.ckpt) or `random`: the first file's architecture at random initialisation,
    added as the baseline unless --no-baseline. Each embeds every chip once
    (cached in --out); k-NN and logistic-regression classifiers are then fitted on
    each share of the training labels and scored on the held-out test split. The
    table (stdout) gives test accuracy (--task segment: mIoU of a per-patch-token
    probe), mean ± sd over the seeds, per encoder and label fraction; --out gets
    probe.json and probe.png (score vs labels). Pre-training helped where it
    beats random by more than the sd, above all at few labels.
    """
    import json

    from dspt_geo.probe import (
        DEFAULT_FRACTIONS,
        DEFAULT_SEEDS,
        HEADS,
        format_table,
        write_json,
        write_plot,
    )
    from dspt_geo.probe import probe as run_probe

    report = run_probe(
        list(encoders),
        list(images),
        list(labels) or None,
        class_column,
        out=out,
        split=split,  # type: ignore[arg-type]
        task=task,  # type: ignore[arg-type]
        fractions=fractions or DEFAULT_FRACTIONS,
        seeds=seeds or DEFAULT_SEEDS,
        heads=heads or HEADS,  # type: ignore[arg-type]
        pool=pool,  # type: ignore[arg-type]
        baseline=not no_baseline,
        image_size=image_size,
        batch_size=batch_size,
        num_workers=num_workers,
        seed=seed,
    )
    folder = Path(out)
    logger.info('wrote %s', write_json(report, folder / 'probe.json'))
    logger.info('wrote %s', write_plot(report, folder / 'probe.png'))
    click.echo(json.dumps(report, indent=1) if as_json else format_table(report))
