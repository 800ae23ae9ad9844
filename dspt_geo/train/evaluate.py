"""Evaluate a fine-tuned model on labelled data: the task's standard metrics.

:func:`evaluate` reads labels as fine-tuning does, with the model's class table,
band layout, tile size and normalisation statistics, and scores them with the
metrics of validation (:class:`~dspt_geo.train.metrics.TaskMetrics`):

- segmentation scenes (``split='all'``): exactly what ``dspt-geo predict``
  writes. Each scene goes through :func:`~dspt_geo.predict.predict_scene` (its
  windows, its blending, its nodata) into a temporary mask, which is scored
  against the labels pixel by pixel;
- chips, and detection scenes: every chip, or overlapping windows over every
  scene that count each labelled pixel (each box) once;
- ``split='val'`` (or ``'train'``, ``'test'``): the fine-tuning run's own split
  (the split and seed are in the model file), in the windows validation used, so
  that the metric the run logged is reproduced.
"""

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
import torch
from PIL import Image, ImageDraw
from rasterio.crs import CRS
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds
from torch import nn
from tqdm.auto import tqdm

from ..data.labels import ClassTable, SceneDataset, open_labelled
from ..data.statistics import BandStatistics
from ..data.transforms import normalise
from ..errors import IncompatibleRasterError, LabelError
from ..models import load_finetuned
from ..outputs import atomic_write
from ..predict import PredictionSpec, predict_scene
from ..predict.run import NODATA
from .config import parse_split
from .finetune_data import evaluation_dataset, evaluation_loader
from .metrics import TaskMetrics

__all__ = (
    'EVALUATION_SPLITS',
    'confusion_image',
    'evaluate',
    'format_report',
    'write_confusion_png',
    'write_report',
)

logger = logging.getLogger(__name__)

EvaluationSplit = Literal['all', 'train', 'val', 'test']

#: What :func:`evaluate` scores: everything, or a split of the fine-tuning run.
EVALUATION_SPLITS: tuple[EvaluationSplit, ...] = ('all', 'train', 'val', 'test')


def evaluate(
    model_path: str | os.PathLike[str],
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    labels: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    class_column: str | None = None,
    *,
    split: EvaluationSplit = 'all',
    batch_size: int | None = None,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score a fine-tuned model on labelled data.

    Args:
        model_path: ``model.safetensors`` of ``dspt-geo finetune``.
        images: images as :func:`~dspt_geo.data.labels.open_labelled` takes them.
        labels: labels likewise (none for class folders).
        class_column: column of vector or table labels holding the class.
        split: ``'all'`` (every labelled sample) or the ``'train'``, ``'val'`` or
            ``'test'`` split as the fine-tuning run drew it (same split setting,
            seed and tile size).
        batch_size: chips per batch (default: the run's).
        num_workers: DataLoader workers.
        device: where to run the model (default: a GPU if there is one).
        tile: window side on scenes, as ``dspt-geo predict --tile`` (default: the
            model's training tile).
        overlap: overlap of the windows, as ``predict --overlap`` (default: the
            model's).
        progress: show a progress bar (stderr).

    Returns:
        the report: ``task``, the task's metrics (see
        :meth:`~dspt_geo.train.metrics.TaskMetrics.compute`), ``classes``,
        ``model``, ``split``, ``images``, ``labels``.

    Raises:
        CheckpointError: If the model file is not a fine-tuned model.
        LabelError: If the labels do not fit the images or the model's classes,
            or the data has no such split.
        IncompatibleRasterError: If the images' bands are not the model's.
        ValueError: If *split* is unknown.

    .. versionadded:: 0.1
    """
    if split not in EVALUATION_SPLITS:
        msg = f'split must be one of {", ".join(EVALUATION_SPLITS)}, got {split!r}'
        raise ValueError(msg)
    model, metadata = load_finetuned(model_path)
    task = metadata['task']
    table = ClassTable.from_dict(metadata['class_table'])
    sensor = metadata['sensor']
    training = metadata.get('training') or {}
    tile_size = int(metadata['tile']['size']) if tile is None else tile
    seed = int(training.get('seed', 0))
    data = open_labelled(
        task,
        _paths(images),
        _paths(labels) or None,
        class_column,
        None if split == 'all' else parse_split(training.get('split', 'auto'), seed),
        class_table=table,
        size=tile_size,
        seed=seed,
    )
    _check_bands(data.bands, sensor, Path(model_path))
    chosen = data.train if split == 'all' else data.split(split)
    if chosen is None:
        msg = (
            f'the data has no {split} split as the run drew it (split '
            f'{training.get("split", "auto")!r}); evaluate --split all, or another split'
        )
        raise LabelError(msg)
    target = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    metrics = TaskMetrics(task, table.names, table.ignore_index).to(target)
    if task == 'segment' and split == 'all' and isinstance(chosen, SceneDataset):
        spec = PredictionSpec.from_metadata(metadata)
        for scene in sorted(set(map(str, chosen.images.index['filepath']))):
            _score_prediction(
                scene, chosen, model, spec, metrics, target,
                batch_size=batch_size or 8, tile=tile, overlap=overlap,
                progress=progress,
            )  # fmt: skip
    else:
        statistics = BandStatistics.from_dict(sensor['statistics'])
        loader = evaluation_loader(
            evaluation_dataset(
                chosen,
                int(metadata['tile'].get('overlap', 0) if overlap is None else overlap),
                size=tile_size,
            ),
            batch_size or int(training.get('batch_size', 16)),
            num_workers,
        )
        model.to(target).eval()
        with torch.inference_mode():
            for batch in tqdm(
                loader, desc='evaluating', unit='batch', disable=not progress
            ):
                batch = _to(batch, target)
                images_ = normalise(batch['image'], batch['valid'], statistics)
                metrics.update(batch, model(images_))
    report = metrics.compute()
    report.update(
        {
            'classes': list(table.names),
            'model': str(model_path),
            'split': split,
            'images': [str(p) for p in _paths(images)],
            'labels': [str(p) for p in _paths(labels)],
        }
    )
    return report


def _score_prediction(
    scene: str,
    scenes: SceneDataset,
    model: nn.Module,
    spec: PredictionSpec,
    metrics: TaskMetrics,
    device: torch.device,
    *,
    batch_size: int,
    tile: int | None,
    overlap: int | None,
    progress: bool,
    rows: int = 512,
) -> None:
    """Predict *scene* as ``dspt-geo predict`` does; score the written mask.

    The mask is written to a temporary folder and read back in strips of *rows*,
    each against the labels of the same pixels (nodata pixels are not scored).

    Raises:
        LabelError: If the scene is not on the grid the labels are read on (its
            CRS or pixel size differs from the first scene's).
    """
    ignore = scenes.class_table.ignore_index
    with tempfile.TemporaryDirectory(prefix='dspt-geo-evaluate-') as folder:
        path = Path(folder) / 'mask.tif'
        predict_scene(
            scene, model, spec, path, device=device, batch_size=batch_size,
            tile=tile, overlap=overlap, progress=progress, style=False,
        )  # fmt: skip
        with rasterio.open(path) as mask:
            grid = CRS.from_user_input(scenes.images.crs), scenes.images.res
            if mask.crs != grid[0] or not np.allclose(mask.res, grid[1]):
                msg = (
                    f'{scene} is in {mask.crs} at {mask.res[0]:g} units per pixel, '
                    f'the labels are read in {grid[0]} at {grid[1][0]:g}; evaluate '
                    'scenes of one CRS and pixel size together'
                )
                raise LabelError(msg)
            for top in range(0, mask.height, rows):
                window = Window(0, top, mask.width, min(rows, mask.height - top))
                predicted = torch.from_numpy(mask.read(1, window=window)).long()
                labels = scenes.read(window_bounds(window, mask.transform))['mask']
                nodata = predicted == NODATA
                labels[nodata] = ignore
                predicted[nodata] = 0
                metrics.update_mask(predicted.to(device), labels.to(device))


def _paths(
    value: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None,
) -> list[str]:
    """*value* as a list of path strings."""
    if value is None:
        return []
    if isinstance(value, str | os.PathLike):
        return [str(value)]
    return [str(v) for v in value]


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch's tensors (and lists of tensors) on *device*."""
    moved: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            moved[key] = value.to(device)
        elif isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
            moved[key] = [v.to(device) for v in value]
        else:
            moved[key] = value
    return moved


def _check_bands(
    bands: Sequence[str], sensor: dict[str, Any], model_path: Path
) -> None:
    """Raise unless the images have the model's band layout."""
    expected = list(sensor.get('bands') or [])
    generic = [f'band_{i + 1}' for i in range(max(len(expected), len(bands)))]
    named = (
        list(bands) != generic[: len(bands)] and expected != generic[: len(expected)]
    )
    if len(bands) != int(sensor['in_chans']) or (named and list(bands) != expected):
        msg = (
            f'the images have {len(bands)} bands ({", ".join(bands)}) but '
            f'{model_path.name} takes {sensor["in_chans"]} ({", ".join(expected)}); '
            'evaluate it on images of the band layout it was trained on'
        )
        raise IncompatibleRasterError(msg)


def write_report(report: dict[str, Any], path: str | os.PathLike[str]) -> list[Path]:
    """Write the report as JSON, and beside it the confusion matrix (classification).

    Both are written to temporary files first and renamed into place.

    Args:
        report: from :func:`evaluate`.
        path: the JSON file; the PNG is ``<stem>_confusion.png`` beside it.

    Returns:
        the files written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    if report['task'] == 'classify':
        png = path.with_name(f'{path.stem}_confusion.png')
        write_confusion_png(report['confusion_matrix'], report['classes'], png)
        report = {**report, 'confusion_matrix_png': str(png)}
        written.append(png)
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + '\n')
    return [path, *written]


def write_confusion_png(
    matrix: Sequence[Sequence[int]],
    class_names: Sequence[str],
    path: str | os.PathLike[str],
) -> None:
    """Write :func:`confusion_image` as a PNG, atomically.

    Args:
        matrix: K x K counts.
        class_names: the K class names.
        path: the PNG file.
    """
    path = Path(path)
    with atomic_write(path) as tmp:
        confusion_image(matrix, class_names).save(tmp, format='PNG')


def confusion_image(
    matrix: Sequence[Sequence[int]], class_names: Sequence[str]
) -> Image.Image:
    """Draw a confusion matrix: rows are labels, columns predictions.

    Cells are shaded by the share of their row (white to blue) and show the
    count; the diagonal holds the correct ones.

    Args:
        matrix: K x K counts.
        class_names: the K class names.

    Returns:
        the RGB image.
    """
    counts = np.asarray(matrix, dtype=np.float64).reshape(len(class_names), -1)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    names = [name[:14] for name in class_names]
    cell = 44
    label_width = 8 * max((len(name) for name in names), default=4) + 16
    size = len(names)
    width = label_width + size * cell + 8
    height = 40 + size * cell + 24
    image = Image.new('RGB', (width, height), 'white')
    draw = ImageDraw.Draw(image)
    draw.text((label_width, 4), 'predicted ->', fill='black')
    draw.text((4, 4), 'label', fill='black')
    for j in range(size):
        draw.text((label_width + j * cell + 4, 22), str(j), fill='black')
    for i, name in enumerate(names):
        top = 40 + i * cell
        draw.text((4, top + cell // 2 - 6), f'{i} {name}', fill='black')
        for j in range(size):
            share = float(shares[i, j])
            shade = (
                round(255 * (1 - 0.8 * share)),
                round(255 * (1 - 0.6 * share)),
                255,
            )
            left = label_width + j * cell
            draw.rectangle(
                (left, top, left + cell - 2, top + cell - 2), fill=shade, outline='grey'
            )
            text = 'white' if share > 0.6 else 'black'
            draw.text(
                (left + 4, top + cell // 2 - 6), f'{int(counts[i, j])}', fill=text
            )
    draw.text((4, height - 18), 'rows: labels, columns: predictions', fill='black')
    return image


def format_report(report: dict[str, Any]) -> str:
    """Human-readable text of a report of :func:`evaluate`."""
    lines = [f'{report["model"]} on {", ".join(report["images"])} ({report["split"]})']

    def number(value: float | None) -> str:
        return '-' if value is None else f'{value:.4f}'

    match report['task']:
        case 'classify':
            lines.append(
                f'  overall accuracy  {number(report["accuracy"])} '
                f'({report["samples"]} chips), mean class accuracy '
                f'{number(report["mean_class_accuracy"])}'
            )
            lines.append(f'  {"class":<20} {"accuracy":>9} {"support":>8}')
            for name, row in report['per_class'].items():
                lines.append(
                    f'  {name:<20} {number(row["accuracy"]):>9} {row["support"]:>8}'
                )
        case 'segment':
            lines.append(
                f'  mIoU  {number(report["miou"])}, pixel accuracy '
                f'{number(report["pixel_accuracy"])} ({report["pixels"]} pixels)'
            )
            lines.append(f'  {"class":<20} {"IoU":>7} {"F1":>7} {"pixels":>10}')
            for name, row in report['per_class'].items():
                lines.append(
                    f'  {name:<20} {number(row["iou"]):>7} {number(row["f1"]):>7} '
                    f'{row["support"]:>10}'
                )
        case _:
            lines.append(
                f'  mAP@0.5  {number(report["map_50"])}, mAP@[.5:.95] '
                f'{number(report["map"])} ({report["samples"]} images)'
            )
            lines.append(f'  {"class":<20} {"AP@0.5":>7} {"AP":>7} {"objects":>8}')
            for name, row in report['per_class'].items():
                lines.append(
                    f'  {name:<20} {number(row["ap_50"]):>7} {number(row["ap"]):>7} '
                    f'{row["support"]:>8}'
                )
    return '\n'.join(lines)
