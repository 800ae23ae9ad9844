"""The whole pipeline on built-in data, in minutes on a CPU: ``dspt-geo demo``.

:func:`run_demo` writes a synthetic landscape (optical and SAR rasters, land-cover
and building labels, and a larger unlabelled scene), pre-trains a tiny ViT with MAE
on the unlabelled rasters, fine-tunes it for segmentation (land cover) and for
detection (buildings), predicts over the larger scene with both models, and writes
the styled outputs, a QGIS project and a PNG quick-look. Nothing is downloaded.

A demo model trained for minutes on a CPU shows the pipeline, not the accuracy of
a real run (issue #6).
"""

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import RunDirError
from .outputs import atomic_write, check_output_path

__all__ = ('DEMO_MARKER', 'DemoResult', 'DemoSettings', 'run_demo')

logger = logging.getLogger(__name__)

#: File that marks a folder as a demo folder (so ``overwrite`` may delete it).
DEMO_MARKER = 'demo.json'

#: Tiny encoder of the demo: 4 blocks of width 96 on 8 px patches of 64 px images.
_MODEL = 'vit_tiny_patch16_224'
_MODEL_ARGS = {'depth': 4, 'embed_dim': 96, 'num_heads': 3}

#: Heads narrowed to fit the tiny encoder (the defaults suit ViT-B).
_HEADS: dict[str, dict[str, Any]] = {
    'segment': {'channels': 32},
    'detect': {
        'out_channels': 32,
        'representation_size': 128,
        'box_head': '2fc',
        'detector_args': {
            'box_batch_size_per_image': 64,
            'rpn_batch_size_per_image': 64,
            'rpn_pre_nms_top_n_train': 300,
            'rpn_post_nms_top_n_train': 100,
            'rpn_pre_nms_top_n_test': 300,
            'rpn_post_nms_top_n_test': 100,
        },
    },
}


@dataclass(frozen=True)
class DemoSettings:
    """Sizes and lengths of a demo run.

    Attributes:
        train_size: side of the training landscape in pixels.
        scene_size: side of the prediction scene in pixels.
        pretrain_steps: MAE optimiser steps.
        pretrain_batch: MAE batch size.
        segment_steps: segmentation fine-tuning steps.
        detect_steps: detection fine-tuning steps.
        finetune_batch: fine-tuning batch size.
        score_threshold: detections scoring below are dropped.
        split: the fine-tuning runs' validation split.
        probe_chip: side of the labelled chips the probe classifies.
        probe_fractions: label fractions of the probe.
    """

    train_size: int = 512
    scene_size: int = 768
    pretrain_steps: int = 150
    pretrain_batch: int = 32
    segment_steps: int = 40
    detect_steps: int = 25
    finetune_batch: int = 8
    score_threshold: float = 0.3
    split: str = 'auto'
    probe_chip: int = 32
    probe_fractions: tuple[float, ...] = (0.1, 1.0)


#: The full demo (a few minutes on 2 CPU cores) and the quick one (tests).
_FULL = DemoSettings()
_QUICK = DemoSettings(
    train_size=128,
    scene_size=192,
    pretrain_steps=3,
    pretrain_batch=8,
    segment_steps=3,
    detect_steps=3,
    finetune_batch=4,
    score_threshold=0.0,
    split='none',
    probe_chip=16,
)


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` wrote, and how long each stage took.

    Attributes:
        out_dir: the demo folder.
        scene: the scene predicted over.
        mask: the land-cover mask (COG) of the scene.
        detections: the building detections (GeoPackage, layer ``detections``).
        styles: the QGIS ``.qml`` styles beside *mask* and *detections*.
        project: the QGIS project (``.qgz``).
        quicklook: the PNG quick-look.
        models: the model files: ``pretrained``, ``segment`` and ``detect``.
        detection_count: detections written.
        timings: wall time per stage in seconds, and ``total``.
        probe_table: the probe's table: pre-trained vs random-init encoder,
            k-NN and logistic accuracy on labelled chips of the landscape.

    .. versionadded:: 0.1
    """

    out_dir: Path
    scene: Path
    mask: Path
    detections: Path
    styles: tuple[Path, ...]
    project: Path
    quicklook: Path
    models: dict[str, Path] = field(default_factory=dict)
    detection_count: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    probe_table: str = ''


def run_demo(
    out_dir: str | os.PathLike[str] = 'dspt-geo-demo',
    *,
    overwrite: bool = False,
    quick: bool = False,
) -> DemoResult:
    """Run the whole pipeline on built-in synthetic data and write its outputs.

    Writes under *out_dir*: ``data/`` (training rasters, labels, labelled chips,
    the scene), ``runs/`` (the pre-training run, its probe against random
    initialisation, and both fine-tuning runs), and the results:
    ``scene_mask.tif`` and ``scene_detections.gpkg`` with their ``.qml`` styles,
    ``demo.qgz`` and ``demo.png``.

    Args:
        out_dir: the demo folder (created).
        overwrite: replace a previous demo folder.
        quick: tiny data and a few steps per stage (seconds; for tests).

    Returns:
        the written paths and the timings.

    Raises:
        OutputPathError: If *out_dir* is a file or cannot be created.
        RunDirError: If *out_dir* exists and is not empty (without *overwrite*),
            or, with *overwrite*, is not a demo folder.

    .. versionadded:: 0.1
    """
    from .models import load_finetuned
    from .predict import PredictionSpec, predict_scene, write_qgis_project
    from .probe import format_table, probe, write_json, write_plot
    from .train import FinetuneConfig, PretrainConfig, finetune, pretrain

    settings = _QUICK if quick else _FULL
    out = Path(out_dir)
    _prepare(out, overwrite)
    marker = out / DEMO_MARKER
    marker.write_text(json.dumps({'kind': 'dspt-geo demo', 'quick': quick}))
    timings: dict[str, float] = {}
    started = time.perf_counter()

    with _stage('data', timings):
        data = out / 'data'
        optical, sar = _write_data(data, settings)
        labels = data / 'labels'
        scene = data / 'scene' / 'scene.tif'

    runs = out / 'runs'
    with _stage('pretrain', timings):
        logger.info(
            'pre-training a tiny ViT (MAE) on the optical and SAR rasters: %d steps',
            settings.pretrain_steps,
        )
        pretrained = pretrain(
            PretrainConfig(
                paths=[str(optical.parent), str(sar)],
                out=str(runs / 'pretrain'),
                model=_MODEL,
                model_args=dict(_MODEL_ARGS),
                image_size=64,
                patch_size=8,
                decoder_embed_dim=64,
                decoder_depth=1,
                decoder_num_heads=2,
                batch_size=settings.pretrain_batch,
                steps=settings.pretrain_steps,
                lr=1.5e-3,
                samples_per_epoch=settings.pretrain_batch * settings.pretrain_steps,
                accelerator='cpu',
                devices=1,
                num_workers=0,
                checkpoint_every=settings.pretrain_steps,
            )
        )

    with _stage('probe', timings):
        logger.info('probing the pre-trained encoder against random initialisation')
        probe_report = probe(
            [pretrained],
            [data / 'chips'],
            out=runs / 'probe',
            fractions=settings.probe_fractions,
            image_size=settings.probe_chip,
        )
        write_json(probe_report, runs / 'probe' / 'probe.json')
        write_plot(probe_report, runs / 'probe' / 'probe.png')

    models: dict[str, Path] = {'pretrained': pretrained}
    for task, label_file, steps in (
        ('segment', labels / 'landcover.tif', settings.segment_steps),
        ('detect', labels / 'buildings.gpkg', settings.detect_steps),
    ):
        with _stage(task, timings):
            logger.info(
                'fine-tuning for %s on %s: %d steps',
                'land cover' if task == 'segment' else 'buildings',
                label_file.name,
                steps,
            )
            models[task] = finetune(
                FinetuneConfig(
                    task=task,  # type: ignore[arg-type]
                    images=[str(optical)],
                    labels=[str(label_file)],
                    out=str(runs / task),
                    class_column='class' if task == 'detect' else None,
                    class_table=(
                        str(labels / 'classes.json') if task == 'segment' else None
                    ),
                    init=str(pretrained),
                    # A short run on an unbalanced landscape: without median
                    # weights the rare classes (roads, buildings) never show.
                    class_weights='median',
                    head_args=dict(_HEADS[task]),
                    batch_size=settings.finetune_batch,
                    steps=steps,
                    lr=3e-3,
                    split=settings.split,
                    val_every=steps,
                    checkpoint_every=steps,
                    score_threshold=settings.score_threshold,
                    accelerator='cpu',
                    devices=1,
                    num_workers=0,
                )
            )

    outputs = {
        'segment': out / 'scene_mask.tif',
        'detect': out / 'scene_detections.gpkg',
    }
    results = {}
    for task, target in outputs.items():
        with _stage(f'predict {task}', timings):
            logger.info('predicting %s over %s', task, scene.name)
            model, metadata = load_finetuned(models[task])
            results[task] = predict_scene(
                scene,
                model,
                PredictionSpec.from_metadata(metadata),
                target,
                device='cpu',
                batch_size=16,
                progress=False,
            )

    with _stage('project', timings):
        mask, detections = results['segment'], results['detect']
        project = write_qgis_project(
            out / 'demo.qgz',
            scene,
            [detections.output, mask.output],
            title='dspt-geo demo',
        )
        quicklook = write_quicklook(
            out / 'demo.png', scene, mask.output, detections.output
        )
    timings['total'] = time.perf_counter() - started

    result = DemoResult(
        out_dir=out,
        scene=scene,
        mask=mask.output,
        detections=detections.output,
        styles=tuple(s for s in (mask.style, detections.style) if s is not None),
        project=project,
        quicklook=quicklook,
        models=models,
        detection_count=detections.detections or 0,
        timings=timings,
        probe_table=format_table(probe_report),
    )
    marker.write_text(
        json.dumps(
            {
                'kind': 'dspt-geo demo',
                'quick': quick,
                'outputs': {
                    'mask': str(result.mask),
                    'detections': str(result.detections),
                    'project': str(result.project),
                    'quicklook': str(result.quicklook),
                },
                'models': {k: str(v) for k, v in models.items()},
                'timings_s': {k: round(v, 1) for k, v in timings.items()},
            },
            indent=1,
        )
    )
    logger.info('demo finished in %.0f s', timings['total'])
    return result


def _prepare(out: Path, overwrite: bool) -> None:
    """Create *out*, or empty a previous demo folder there with *overwrite*.

    Raises:
        OutputPathError: If *out* is a file or cannot be created.
        RunDirError: If *out* is a non-empty folder without *overwrite*, or
            (with *overwrite*) not a demo folder.
    """
    check_output_path(out, 'OUT_DIR', folder=True)
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            msg = (
                f'{out} already exists; pass --overwrite to replace the demo there, '
                'or name another folder'
            )
            raise RunDirError(msg)
        if not (out / DEMO_MARKER).is_file():
            msg = (
                f'{out} is not a dspt-geo demo folder (no {DEMO_MARKER}); not '
                'deleting it: name another folder'
            )
            raise RunDirError(msg)
        logger.info('deleting the previous demo in %s', out)
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


class _stage:
    """Time a stage of the demo into *timings*."""

    def __init__(self, name: str, timings: dict[str, float]) -> None:
        self.name, self.timings = name, timings

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *args: object) -> None:
        seconds = time.perf_counter() - self.started
        self.timings[self.name] = seconds
        logger.info('%s: %.1f s', self.name, seconds)


def _write_data(data: Path, settings: DemoSettings) -> tuple[Path, Path]:
    """Write the training rasters, labels and scene; return optical file, SAR folder."""
    from .data.synthetic import (
        write_sample_chips,
        write_sample_labels,
        write_sample_rasters,
        write_sample_scene,
    )

    optical, vv, _ = write_sample_rasters(data, size=settings.train_size, seed=0)
    write_sample_labels(data, size=settings.train_size, seed=0)
    write_sample_chips(
        data / 'chips', size=settings.train_size, seed=0, chip=settings.probe_chip
    )
    write_sample_scene(data / 'scene' / 'scene.tif', size=settings.scene_size, seed=7)
    logger.info(
        'wrote a %d px training landscape (optical, SAR, labels) and a %d px scene '
        'to %s',
        settings.train_size,
        settings.scene_size,
        data,
    )
    return optical, vv.parent


def _stretch(bands: npt.NDArray[Any], valid: npt.NDArray[np.bool_]) -> npt.NDArray[Any]:
    """Bands to uint8 by a 2-98 % stretch over the valid pixels."""
    out = np.zeros(bands.shape, np.uint8)
    for i, band in enumerate(bands):
        values = band[valid]
        if values.size == 0:
            continue
        low, high = np.percentile(values, (2, 98))
        scaled = (band.astype(np.float64) - low) / max(high - low, 1e-9)
        out[i] = np.clip(scaled * 255, 0, 255).astype(np.uint8)
    out[:, ~valid] = 0
    return out


def write_quicklook(
    path: str | os.PathLike[str],
    scene: str | os.PathLike[str],
    mask: str | os.PathLike[str],
    detections: str | os.PathLike[str],
    max_side: int = 640,
) -> Path:
    """Write a PNG: the scene in true colour beside the mask, detections as boxes.

    Args:
        path: the PNG to write.
        scene: the optical scene (bands blue, green, red, ...).
        mask: the class raster of the scene, with its class names and colours in
            the raster's colour table or the ``.qml`` palette.
        detections: the detections (GeoPackage layer ``detections``).
        max_side: side of each panel at most, in pixels.

    Returns:
        *path*.

    .. versionadded:: 0.1
    """
    import geopandas as gpd
    import rasterio
    from PIL import Image, ImageDraw
    from rasterio.enums import Resampling

    with rasterio.open(scene) as src:
        factor = max(1, int(np.ceil(max(src.width, src.height) / max_side)))
        shape = (src.height // factor, src.width // factor)
        rgb = src.read([3, 2, 1], out_shape=(3, *shape), resampling=Resampling.average)
        valid = src.read_masks(1, out_shape=shape) > 0
        transform = src.transform * src.transform.scale(
            src.width / shape[1], src.height / shape[0]
        )
    with rasterio.open(mask) as src:
        classes = src.read(1, out_shape=shape, resampling=Resampling.nearest)
        nodata = src.nodata
        try:
            colourmap = src.colormap(1)
        except ValueError:
            colourmap = {}
    palette = np.zeros((256, 3), np.uint8)
    if not colourmap:
        from .data.synthetic import LANDSCAPE_COLOURS

        colourmap = {
            i: tuple(int(c[j : j + 2], 16) for j in (1, 3, 5))
            for i, c in enumerate(LANDSCAPE_COLOURS)
        }
    for value, colour in colourmap.items():
        palette[value] = colour[:3]
    coloured = palette[classes]
    if nodata is not None:
        coloured[classes == nodata] = 0

    gap = 8
    image = Image.new('RGB', (2 * shape[1] + gap, shape[0]), 'white')
    image.paste(Image.fromarray(_stretch(rgb, valid).transpose(1, 2, 0)), (0, 0))
    image.paste(Image.fromarray(coloured), (shape[1] + gap, 0))
    draw = ImageDraw.Draw(image)
    boxes = gpd.read_file(detections, layer='detections')
    inverse = ~transform
    for geometry in boxes.geometry:
        left, bottom, right, top = geometry.bounds
        x0, y0 = inverse * (left, top)
        x1, y1 = inverse * (right, bottom)
        for offset in (0, shape[1] + gap):
            draw.rectangle(
                (x0 + offset, y0, x1 + offset, y1), outline=(255, 0, 255), width=1
            )
    path = Path(path)
    with atomic_write(path) as tmp:
        image.save(tmp)
    return path
