"""``dspt-geo pretrain``: continued MAE pre-training on unlabelled raster folders."""

from typing import Any

import click

from .logs import route_lightning_logs
from .options import (
    MultiValueCommand,
    MultiValueOption,
    crs_option,
    hardware_options,
    key_values,
    merge_settings,
    nodata_option,
    res_option,
    run_options,
    sar_mode_option,
)


@click.command(cls=MultiValueCommand)
@click.argument('paths', nargs=-1, type=click.Path(exists=True))
@click.option(
    '--out',
    type=click.Path(),
    help='Run folder (config, checkpoints, metrics, previews, pretrained.safetensors). Required unless in --config.',
)
@click.option(
    '--model',
    default='vit_base_patch16_224',
    show_default=True,
    help='timm ViT name (vit_tiny/small/base/large_patch16_224, vit_huge_patch14_224, ...).',
)
@click.option(
    '--model-arg',
    'model_args',
    multiple=True,
    callback=key_values,
    metavar='KEY=VALUE',
    help='Extra timm VisionTransformer argument, repeatable (e.g. depth=4, embed_dim=192).',
)
@click.option(
    '--image-size',
    type=click.IntRange(min=8),
    default=224,
    show_default=True,
    help='Side of the training patches in pixels. Image chips larger than this give random windows; smaller ones are enlarged (bilinear) until their shorter side fits, never down-sampled.',
)
@click.option(
    '--patch-size',
    type=click.IntRange(min=1),
    help="ViT patch size (default: the model name's).",
)
@click.option(
    '--batch-size',
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help='Patches per batch and process.',
)
@click.option(
    '--accumulate',
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help='Batches per optimiser step (gradient accumulation).',
)
@click.option(
    '--epochs',
    type=click.IntRange(min=1),
    help='Length in epochs of --samples-per-epoch patches (default 100).',
)
@click.option(
    '--samples-per-epoch',
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help='Patches drawn per epoch, all processes together.',
)
@click.option(
    '--init',
    default='none',
    show_default=True,
    help='Starting weights: an MAE/timm/torchgeo/dspt-geo checkpoint file, a timm name in the local Hugging Face cache, or none.',
)
@click.option(
    '--mask-ratio',
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.75,
    show_default=True,
    help='Share of patches masked.',
)
@click.option(
    '--decoder-depth',
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help='MAE decoder blocks.',
)
@click.option(
    '--decoder-dim',
    'decoder_embed_dim',
    type=click.IntRange(min=4),
    default=512,
    show_default=True,
    help='MAE decoder width (a multiple of 4).',
)
@click.option(
    '--decoder-heads',
    'decoder_num_heads',
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help='MAE decoder attention heads.',
)
@click.option(
    '--base-lr',
    type=click.FloatRange(min=0, min_open=True),
    default=1.5e-4,
    show_default=True,
    help='Learning rate per 256 images (peak = base-lr x effective batch / 256).',
)
@click.option(
    '--lr',
    type=click.FloatRange(min=0, min_open=True),
    help='Absolute peak learning rate, instead of --base-lr scaling (1e-3 suits short small-batch runs).',
)
@click.option(
    '--min-valid-fraction',
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help='Skip patches with a smaller share of valid (non-nodata) pixels.',
)
@click.option(
    '--probe-images',
    cls=MultiValueOption,
    type=click.Path(exists=True),
    help='Held-out labelled chips (as finetune classify reads them: class folders, ...) for a k-NN probe of the encoder while training: logged to metrics.csv (probe_knn), the progress bar and previews/probe.png, with a warning while it is below its step-0 (random-init) value after the warm-up. Keep it small (hundreds to a few thousand chips).',
)
@click.option(
    '--probe-labels',
    cls=MultiValueOption,
    type=click.Path(exists=True),
    help='Labels of --probe-images where they are not class folders.',
)
@click.option(
    '--probe-every',
    type=click.IntRange(min=1),
    help='Probe every this many steps, at step 0 and at the end (default: every --checkpoint-every).',
)
@click.option(
    '--keep-best-probe',
    is_flag=True,
    help='Export the best-probing weights as pretrained.safetensors (the last as pretrained-last.safetensors).',
)
@crs_option
@res_option
@nodata_option
@sar_mode_option
@hardware_options
@run_options
@click.option('--seed', type=int, default=0, show_default=True, help='Random seed.')
@click.pass_context
def pretrain(
    ctx: click.Context,
    /,
    paths: tuple[str, ...],
    config_file: str | None,
    resume: bool,
    overwrite: bool,
    **options: Any,
) -> None:
    """Continue MAE pre-training of a ViT on the unlabelled images in PATHS.

    PATHS are folders (searched recursively) or files: folders of image chips
    (JPEG, PNG, TIFF without a CRS; class subfolders are fine, their names are
    unused) and georeferenced rasters, optical and SAR mixed. Each band layout
    forms a group with its own patch-embedding stem on one shared encoder; each
    chip is sampled on its own, never mosaicked. Writes
    RUN_DIR/pretrained.safetensors for `dspt-geo finetune`.
    """
    from dspt_geo.train.config import PretrainConfig
    from dspt_geo.train.run import pretrain as run_pretraining

    route_lightning_logs()

    settings = merge_settings(
        ctx, PretrainConfig.read_yaml(config_file) if config_file else {}, options
    )
    if paths:
        settings['paths'] = list(paths)
    config = PretrainConfig.from_dict(settings)
    path = run_pretraining(config, resume=resume, overwrite=overwrite)
    click.echo(path)
