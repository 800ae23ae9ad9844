"""``dspt-geo finetune``: fine-tune a (pre-trained) ViT on labelled data."""

from typing import Any

import click

from dspt_geo.task import TASKS

from .logs import route_lightning_logs
from .options import (
    MultiValueCommand,
    MultiValueOption,
    hardware_options,
    key_values,
    merge_settings,
    run_options,
)


def _split(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Check a --split value early, as a usage error."""
    if value is None:
        return None
    from dspt_geo.errors import ConfigError
    from dspt_geo.train.config import parse_split

    try:
        parse_split(value)
    except ConfigError as error:
        raise click.BadParameter(str(error), ctx, param) from None
    return value


@click.command(cls=MultiValueCommand)
@click.argument('task', type=click.Choice(TASKS))
@click.option(
    '--images',
    cls=MultiValueOption,
    type=click.Path(exists=True),
    help='Image rasters or folders, chip folders, or a folder (or .zip) of class folders (classify); several may follow. Required unless in --config.',
)
@click.option(
    '--labels',
    cls=MultiValueOption,
    type=click.Path(exists=True),
    help='Labels: label rasters, mask chips, vectors (GeoPackage, GeoJSON, Shapefile), a CSV of chips or points, COCO JSON or Pascal VOC XML; not needed for class folders.',
)
@click.option(
    '--class-column',
    metavar='NAME',
    help='Column of vector or table labels holding the class (default: class, label, ...; vectors without one are one class, see --class-name).',
)
@click.option(
    '--class-table',
    type=click.Path(exists=True, dir_okay=False),
    help="JSON or CSV of class names, stored values and colours (needed for RGB colour masks; names the values of integer and palette masks). Default: derived from the labels; integer masks take names from a raster attribute table or category names (.aux.xml), else a QGIS .qml beside the mask, and colours from the mask's colour table.",
)
@click.option(
    '--class-name',
    metavar='NAME',
    help="Name of the one class of vector labels without a class column (default: the label file's name, e.g. buildings for buildings.gpkg).",
)
@click.option(
    '--split',
    default='auto',
    show_default=True,
    callback=_split,
    help='Train/validation split: auto (split folders, else a split column, else spatial blocks or random), folder, column:NAME, blocks, blocks:SIZE (CRS units), random (stratified by class for classify), or none (no validation).',
)
@click.option(
    '--label-fraction',
    type=click.FloatRange(0, 1, min_open=True),
    metavar='F',
    help='Train on this share of the training labels (few-label protocols, e.g. 0.1): per class for classify (at least one each), of images (chips) or regions (blocks of scenes) for segment and detect; validation keeps all its labels. The lists are written to RUN_DIR/splits/. Default: all.',
)
@click.option(
    '--label-seed',
    type=int,
    help='Seed of the --label-fraction draw (default: --seed).',
)
@click.option(
    '--out',
    type=click.Path(),
    help='Run folder (config, checkpoints, metrics.csv, model.safetensors). Required unless in --config.',
)
@click.option(
    '--init',
    default='none',
    show_default=True,
    help='Starting weights: a dspt-geo pretrained.safetensors (its model settings become the defaults), an MAE/timm/torchgeo checkpoint file, a timm name in the local Hugging Face cache, or none.',
)
@click.option(
    '--model',
    help="timm ViT name (default: the --init file's, else vit_base_patch16_224).",
)
@click.option(
    '--model-arg',
    'model_args',
    multiple=True,
    callback=key_values,
    metavar='KEY=VALUE',
    help="Extra timm VisionTransformer argument, repeatable (e.g. depth=4); default: the --init file's.",
)
@click.option(
    '--image-size',
    type=click.IntRange(min=8),
    help="Side of the training chips in pixels, a multiple of the patch size (default: the --init file's, else 224). Scenes and segmentation/detection chips are cut into windows of this size (chips larger give several windows, never a down-sampled one; smaller ones are padded and the padding ignored); classification chips are resized to it whole.",
)
@click.option(
    '--patch-size',
    type=click.IntRange(min=1),
    help="ViT patch size (default: the --init file's, else the model name's).",
)
@click.option(
    '--head-arg',
    'head_args',
    multiple=True,
    callback=key_values,
    metavar='KEY=VALUE',
    help="Task model argument, repeatable: pool=cls (classify); channels=64, neck=full (segment: BEiT's full-width pyramid; default neck=narrow, ViTDet's widths); out_channels, representation_size, box_head=4conv1fc, detector_args={...}, pyramid=multi (detect: blocks at 1/4, 1/2, 3/4 of the depth and the last through an FPN, as the reference detection configs, which feed ViT-B blocks 3/5/7/11 to an FPN; out_indices=[3,5,7,11] picks the blocks; default pyramid=last, ViTDet's simple pyramid from the last block). Default head sizes follow the encoder and the tile and are logged.",
)
@click.option(
    '--batch-size',
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help='Chips per batch and process.',
)
@click.option(
    '--epochs',
    type=click.IntRange(min=1),
    help='Length in epochs over the training chips (default 50).',
)
@click.option(
    '--samples-per-epoch',
    type=click.IntRange(min=1),
    help='Training chips drawn from scenes per epoch (default: as many as tile the training area).',
)
@click.option(
    '--base-lr',
    type=click.FloatRange(min=0, min_open=True),
    default=1e-3,
    show_default=True,
    help='Learning rate per 256 images (peak = base-lr x effective batch / 256).',
)
@click.option(
    '--lr',
    type=click.FloatRange(min=0, min_open=True),
    help='Absolute peak learning rate of the head, instead of --base-lr scaling.',
)
@click.option(
    '--layer-decay',
    type=click.FloatRange(0, 1, min_open=True),
    default=0.65,
    show_default=True,
    help='Layer-wise lr decay: block i learns at lr x decay^(depth + 1 - i).',
)
@click.option(
    '--drop-path',
    type=click.FloatRange(0, 1, max_open=True),
    default=0.1,
    show_default=True,
    help='Stochastic depth rate of the encoder blocks.',
)
@click.option(
    '--label-smoothing',
    type=click.FloatRange(0, 1, max_open=True),
    default=0.1,
    show_default=True,
    help='classify: label smoothing of the cross-entropy targets (0: plain one-hot targets).',
)
@click.option(
    '--mixup',
    is_flag=True,
    help='classify: Mixup (alpha 0.8) or CutMix (alpha 1.0), half and half, of each training batch with its reverse, as the MAE/CSPT fine-tuning configs; off by default (it needs long runs to pay off).',
)
@click.option(
    '--random-erase',
    type=click.FloatRange(0, 1),
    default=0.25,
    show_default=True,
    help='classify: probability that a training chip gets one rectangle (2-33 % of it) set to the band means (0: off).',
)
@click.option(
    '--chip-memory',
    type=click.IntRange(0),
    default=1024,
    show_default=True,
    metavar='MIB',
    help="decode the chips (classify) or the scene areas of each split (segment, detect; where every file lies on the images' pixel grid) once and hold them in memory when they fit in this many MiB (training first, then validation; the training loader then runs without workers); 0: read every chip from its files each time.",
)
@click.option(
    '--band-jitter/--no-band-jitter',
    default=True,
    show_default=True,
    help='classify: band-safe photometric jitter of training chips, for any band count: a random gain (+-20 %) and offset (+-0.2 std) per band, and a Gaussian blur on a fifth of the chips.',
)
@click.option(
    '--freeze-encoder',
    is_flag=True,
    help='Head-only fine-tuning: the encoder keeps its --init weights (no gradient, not in the optimiser, eval mode), only the task head trains; the standard comparison of starting weights on few labels.',
)
@click.option(
    '--pos-embed',
    type=click.Choice(('auto', 'learned')),
    default='auto',
    show_default=True,
    help="Position embedding: auto (the --init weights' kind: fixed sin-cos computed for the grid, or learned when they learned theirs) or learned (a trainable embedding initialised from the sin-cos of the pre-training grid, resampled bicubically to --image-size; stored in the model file).",
)
@click.option(
    '--class-weights',
    type=click.Choice(('none', 'median', 'inverse', 'auto')),
    default='none',
    show_default=True,
    help='Segmentation loss weights from the class frequencies of the training masks (every chip of a set of up to 1,000, else a seeded 1,000): none (plain cross-entropy, as the reference UperNet recipes), median (median-frequency balancing: try it when rare classes matter more than overall accuracy and each has a fair number of labelled pixels, e.g. small objects or rare land cover; it trades precision on frequent classes for recall on rare ones, and hurts where a class is rare only because it is sparsely labelled), inverse (inverse frequency) or auto (median where the classes are over 3x imbalanced).',
)
@click.option(
    '--recompute-stats',
    is_flag=True,
    help="Estimate the normalisation statistics from the labelled data, instead of using those the --init file stores for the images' sensor group (the default when it stores them).",
)
@click.option(
    '--val-every',
    type=click.IntRange(min=1),
    help='Validate every this many steps (default: every epoch).',
)
@click.option(
    '--tile-overlap',
    type=click.IntRange(min=0),
    help='Overlap in pixels of the windows that evaluate and predict tile scenes with (default: a quarter of the image size); stored in the model file.',
)
@click.option(
    '--score-threshold',
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help='detect: detections scoring below are dropped by dspt-geo predict (stored in the model file).',
)
@hardware_options
@run_options
@click.option('--seed', type=int, default=0, show_default=True, help='Random seed.')
@click.pass_context
def finetune(
    ctx: click.Context,
    /,
    task: str,
    config_file: str | None,
    resume: bool,
    overwrite: bool,
    **options: Any,
) -> None:
    """Fine-tune a ViT for TASK (classify, segment or detect) on labelled data.

    Starts from pre-trained weights (--init, e.g. RUN_DIR/pretrained.safetensors of
    `dspt-geo pretrain`), validates on a held-out split, and writes
    RUN_DIR/model.safetensors for `dspt-geo evaluate` and `dspt-geo predict`.
    """
    from dspt_geo.train.config import FinetuneConfig
    from dspt_geo.train.finetune_run import finetune as run_finetuning

    route_lightning_logs()

    settings = merge_settings(
        ctx, FinetuneConfig.read_yaml(config_file) if config_file else {}, options
    )
    settings['task'] = task
    config = FinetuneConfig.from_dict(settings)
    path = run_finetuning(config, resume=resume, overwrite=overwrite)
    click.echo(path)
