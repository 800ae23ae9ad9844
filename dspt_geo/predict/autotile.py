"""The window size of ``tile='auto'``, and a detector's work sized to the window.

Windows of the training tile's size overlap their neighbours by ``overlap`` pixels
on every side, so a scene costs ``(size / (size - overlap))**2`` times its area
in model work (1.8x for 64 px windows overlapping by 16). A model that takes any
multiple of its patch size (``spec.patch_size``: a ViT whose position embeddings
are computed for the input size) can run larger windows, which waste less.
Whether that is faster, and whether it gives the same result (global attention
sees more context than in training), depends on the model and the machine, so
:func:`choose_tile` measures both on the scene itself:

- candidates are multiples of the training tile, from small to large, up to
  :data:`AUTO_MAX_TOKENS` patches and the scene's shorter side
  (:func:`~dspt_geo.predict.tiling.tile_candidates`);
- each runs once on a real window of the scene (its centre), copied to about a
  batch of training tiles' pixels, and its time per window, times the windows it
  needs for the scene, estimates the scene's time;
- a candidate larger than the training tile is checked only when the time it
  would save is more than the check costs (the training tile's tiling of the
  probe window, estimated from the training tile's time);
- the whole search stays within :data:`AUTO_BUDGET` of the training tile's
  estimated time for the scene (its next probe or check is estimated before it
  runs; the model's first call, its one-off set-up, does not count), so on a
  small scene it costs little and may keep the training tile;
- a checked candidate is accepted only when its output on that window agrees
  with the training tile's blended tiling of the same window by at least :data:`AUTO_AGREEMENT` (pixel classes for segmentation; for
  detection, boxes above the run's score threshold matched at IoU 0.5 with the
  same label over the boxes of either, and only where the training tile's tiling
  finds at least :data:`AUTO_MIN_BOXES` boxes: a window without objects, or a
  detector whose scores stay under the threshold there, says nothing about larger
  windows, so the training tile is kept);
- the search stops at the first candidate that disagrees; the best wins.
"""

import contextlib
import logging
import math
import time
from typing import Any

import numpy as np
import shapely
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.transforms import normalise
from .detections import DetectionAccumulator, detection_limits
from .scene import SceneReader
from .spec import PredictionSpec
from .tiling import Tile, TileGrid, blend_weights, tile_candidates

__all__ = (
    'AUTO_AGREEMENT',
    'AUTO_BUDGET',
    'AUTO_MAX_TOKENS',
    'AUTO_MIN_BOXES',
    'choose_tile',
    'sized_to_window',
)

logger = logging.getLogger(__name__)

#: Largest window ``tile='auto'`` tries, in patches (32 x 32): global attention
#: grows with the square of the patches, and its memory with the batch.
AUTO_MAX_TOKENS = 1024

#: Least agreement of a larger window with the training tile's tiling.
AUTO_AGREEMENT = 0.99

#: Fewest boxes the training tile's tiling of the probe window must find before a
#: detector's larger window can be compared with it (measured: a detector whose
#: scores stayed under its threshold found no box at 64 or 512 px, agreed
#: "vacuously", and 512 px windows then cut the scene's mAP50 from 0.029 to 0.001).
AUTO_MIN_BOXES = 2

#: Most of the training tile's estimated time for the scene that the search may
#: take: on a small scene a longer search would cost more than larger windows save.
AUTO_BUDGET = 0.2

#: Training tiles per model call of the probes (larger windows: as many pixels),
#: and windows per call when the check runs the training tile's tiling.
_PROBE_BATCH = 8


def sized_to_window(
    model: nn.Module,
    spec: PredictionSpec,
    size: int,
    max_objects: int | None = None,
    *,
    log: bool = False,
) -> contextlib.AbstractContextManager[Any]:
    """Limit a detector's proposals and detections to windows of *size* pixels.

    Uses the model's ``inference_limits`` (a
    :class:`~dspt_geo.models.DetectionModel` has it) with
    :func:`~dspt_geo.predict.detections.detection_limits`; other tasks and models
    without it are left as they are.

    Args:
        model: the model.
        spec: its prediction spec.
        size: window side in pixels.
        max_objects: most objects in a training tile (default: the spec's).
        log: log the limits.

    Returns:
        a context manager that holds the limits.

    .. versionadded:: 0.1
    """
    limit = getattr(model, 'inference_limits', None)
    if spec.task != 'detect' or limit is None:
        return contextlib.nullcontext()
    limits = detection_limits(
        size, spec.tile, spec.max_objects if max_objects is None else max_objects
    )
    if log:
        logger.info(
            'windows of %d px: up to %d objects, %d proposals, %d detections each',
            size, *limits,
        )  # fmt: skip
    manager: contextlib.AbstractContextManager[Any] = limit(
        limits.proposals, limits.detections
    )
    return manager


def choose_tile(
    model: nn.Module,
    spec: PredictionSpec,
    reader: SceneReader,
    overlap: int,
    device: torch.device,
    max_objects: int | None = None,
    score_threshold: float | None = None,
) -> int:
    """The window size of ``tile='auto'`` (see the module docstring).

    Models that do not take other window sizes (``spec.patch_size`` is None) and
    classification (a class per tile) keep the training tile.

    Args:
        model: the model, in eval mode on *device*.
        spec: its prediction spec.
        reader: the scene.
        overlap: overlap of neighbouring windows in pixels.
        device: where the model runs.
        max_objects: as :func:`~dspt_geo.predict.run.predict_scene`'s.
        score_threshold: detection: the run's score threshold (default: the
            spec's).

    Returns:
        the window side in pixels.

    .. versionadded:: 0.1

    .. versionchanged:: 0.1
       Sizes are timed at the pixels of a batch of training tiles; a candidate
       is checked only when it would save more than its check costs, within a
       budget (issue 16).
    """
    if spec.patch_size is None or spec.task == 'classify':
        logger.info('tile auto: the model takes %d px windows only', spec.tile)
        return spec.tile
    candidates = tile_candidates(
        spec.tile, spec.patch_size, overlap, reader.height, reader.width,
        AUTO_MAX_TOKENS,
    )  # fmt: skip
    threshold = spec.score_threshold if score_threshold is None else score_threshold
    began = time.perf_counter()
    best, best_seconds = spec.tile, math.inf
    budget = math.inf  # set by the training tile's estimate
    tile_seconds = pixel_seconds = math.inf  # per window / pixel, batched
    for size in candidates:
        # The pixels of a batch of training tiles per call, so that every size is
        # timed as efficiently batched as the training tile.
        copies = max(1, round(_PROBE_BATCH * (spec.tile / size) ** 2))
        probe = 2 * copies * size**2 * pixel_seconds
        if time.perf_counter() - began + probe > budget:
            logger.info('tile auto: %d px would exceed the search budget', size)
            break
        image, valid = _centre_window(reader, spec, size, device)
        images = image.expand(copies, -1, -1, -1).contiguous()
        for call in range(2):  # the first call at a new size warms up
            start = time.perf_counter()
            output = _run(model, spec, images, max_objects)
            seconds = (time.perf_counter() - start) / copies
            if call == 0 and size == spec.tile:
                # The model's first call in a process (its one-off set-up) is the
                # run's cost, not the search's.
                began = time.perf_counter()
        pixel_seconds = seconds / size**2
        windows = len(TileGrid(reader.height, reader.width, size, overlap))
        estimate = seconds * windows
        if size == spec.tile:
            tile_seconds, best_seconds = seconds, estimate
            budget = AUTO_BUDGET * estimate
            logger.info(
                'tile auto: %d px, %d windows, about %.2f s', size, windows, estimate
            )
            continue
        # The check runs the training tile's tiling of the probe window: worth it
        # only when the time it could save is larger.
        check = len(TileGrid(size, size, spec.tile, overlap)) * tile_seconds
        if best_seconds - estimate <= check:
            logger.info(
                'tile auto: %d px, %d windows, about %.2f s: saves less than its '
                'check costs (%.2f s)',
                size, windows, estimate, check,
            )  # fmt: skip
            continue
        if time.perf_counter() - began + check > budget:
            logger.info(
                'tile auto: checking %d px would exceed the search budget', size
            )
            break
        agreement = _agreement(
            model, spec, image, valid, output[:1], overlap, max_objects, threshold
        )
        if agreement is None:
            logger.info(
                'tile auto: in the %d px probe window the training tile finds under '
                '%d boxes (score >= %g), too few to compare with',
                size, AUTO_MIN_BOXES, threshold,
            )  # fmt: skip
            break
        logger.info(
            'tile auto: %d px, %d windows, about %.2f s, %.1f %% agreement',
            size, windows, estimate, 100 * agreement,
        )  # fmt: skip
        if agreement < AUTO_AGREEMENT:
            break
        best, best_seconds = size, estimate
    logger.info('tile auto: %d px windows', best)
    return best


def _centre_window(
    reader: SceneReader, spec: PredictionSpec, size: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """The normalised window of *size* at the scene's centre, and its valid mask."""
    row = max(0, (reader.height - size) // 2)
    col = max(0, (reader.width - size) // 2)
    height, width = min(size, reader.height), min(size, reader.width)
    tile = Tile(0, row, col, height, width, True, True, True, True)
    image, valid = reader.read(tile, size)
    images, masks = torch.from_numpy(image)[None], torch.from_numpy(valid)[None]
    return normalise(images, masks, spec.statistics).to(device), masks[0]


def _run(
    model: nn.Module, spec: PredictionSpec, images: Tensor, max_objects: int | None
) -> Any:
    """The model's output for *images*, as predict runs it."""
    autocast = (
        torch.autocast('cuda', dtype=torch.bfloat16)
        if images.device.type == 'cuda'
        else contextlib.nullcontext()
    )
    size = images.shape[-1]
    with (
        torch.inference_mode(),
        autocast,
        sized_to_window(model, spec, size, max_objects),
    ):
        output = model(images)
    if images.device.type == 'cuda':
        torch.cuda.synchronize(images.device)
    return output


def _agreement(
    model: nn.Module,
    spec: PredictionSpec,
    image: Tensor,
    valid: Tensor,
    output: Any,
    overlap: int,
    max_objects: int | None,
    score_threshold: float,
) -> float | None:
    """Agreement of *output* (one large window) with the tiling of that window.

    None for a detector whose tiling finds under :data:`AUTO_MIN_BOXES` boxes.
    """
    size, tile = image.shape[-1], spec.tile
    grid = list(TileGrid(size, size, tile, overlap))
    windows = torch.stack(
        [image[0, :, t.row : t.row + tile, t.col : t.col + tile] for t in grid]
    )
    outputs: list[Any] = []
    for first in range(0, len(grid), _PROBE_BATCH):
        outputs.extend(
            _run(model, spec, windows[first : first + _PROBE_BATCH], max_objects)
        )
    if spec.task == 'segment':
        sums = torch.zeros(spec.num_classes, size, size, device=image.device)
        for t, logits in zip(grid, outputs, strict=True):
            logits = F.interpolate(
                logits[None].float(), size=(tile, tile), mode='bilinear'
            )[0]
            weight = torch.from_numpy(blend_weights(tile, overlap, t)).to(sums)
            rows, cols = slice(t.row, t.row + tile), slice(t.col, t.col + tile)
            sums[:, rows, cols] += logits * weight
        large = F.interpolate(output.float(), size=(size, size), mode='bilinear')[0]
        same = large.argmax(dim=0).cpu() == sums.argmax(dim=0).cpu()
        return float(same[valid].float().mean()) if valid.any() else 1.0
    found = DetectionAccumulator(score_threshold)
    masks = valid.numpy()
    for t, result in zip(grid, outputs, strict=True):
        found.add(
            t,
            result['boxes'].float().cpu().numpy(),
            result['labels'].cpu().numpy(),
            result['scores'].float().cpu().numpy(),
            masks[t.row : t.row + tile, t.col : t.col + tile],
        )
    tiled = found.merged()
    if len(tiled[0]) < AUTO_MIN_BOXES:
        return None
    whole = DetectionAccumulator(score_threshold)
    (result,) = output
    whole.add(
        Tile(0, 0, 0, size, size, True, True, True, True),
        result['boxes'].float().cpu().numpy(),
        result['labels'].cpu().numpy(),
        result['scores'].float().cpu().numpy(),
        masks,
    )
    return _box_agreement(tiled[:2], whole.merged()[:2])


def _box_agreement(
    first: tuple[np.ndarray, np.ndarray], second: tuple[np.ndarray, np.ndarray]
) -> float:
    """Boxes matched (IoU >= 0.5, same label) over the boxes of either (1 if none)."""
    (boxes_a, labels_a), (boxes_b, labels_b) = first, second
    total = len(boxes_a) + len(boxes_b)
    if total == 0:
        return 1.0
    a, b = shapely.box(*boxes_a.T), shapely.box(*boxes_b.T)
    matched = 0
    taken = np.zeros(len(b), dtype=bool)
    for box, label in zip(a, labels_a, strict=True):
        if not len(b):
            break
        inter = shapely.area(shapely.intersection(box, b))
        iou = inter / (shapely.area(box) + shapely.area(b) - inter)
        iou[(labels_b != label) | taken] = 0
        j = int(iou.argmax())
        if iou[j] >= 0.5:
            taken[j] = True
            matched += 1
    return 2 * matched / total
