"""What whole-scene prediction writes: one object per kind of output.

:func:`~dspt_geo.predict.run.predict_scene` feeds every batch of model outputs to
one :class:`SceneOutput` (:meth:`~SceneOutput.add`), then has it write its files
(:meth:`~SceneOutput.commit`), or remove every temporary file when anything failed
(:meth:`~SceneOutput.abort`). :data:`OUTPUTS` picks the output of a task:

- :class:`MaskOutput` (``segment``): blended logits of one row of windows are held
  at a time and finished rows go straight to a :class:`ClassRaster`, a
  single-band uint8 COG on the scene's grid (class index per pixel, 255 = nodata)
  with a colour table, class names and a ``.qml`` style, and optionally to a
  :class:`ProbabilityRaster` (one uint8 band per class).
- :class:`ClassGridOutput` (``classify``): one class per ``tile`` x ``tile`` cell,
  a coarse COG on the scene's grid scaled by ``tile`` (the last row and column of
  cells may reach past the scene), styled the same way; optionally probabilities.
- :class:`DetectionOutput` (``detect``): boxes of all windows merged by class-wise
  suppression over the scene (:mod:`dspt_geo.predict.detections`), written as
  polygons in the scene's CRS to a GeoPackage (layer ``detections``), GeoJSON or
  FlatGeobuf by extension, with a categorised ``.qml`` style.
"""

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from affine import Affine
from torch import Tensor

from ..errors import CheckpointError
from .detections import DetectionAccumulator, detections_frame
from .qgis import categorized_qml, palette_qml, write_qml
from .scene import SceneReader
from .spec import PredictionSpec, Task
from .tiling import FinishedRows, StripAccumulator, Tile, blend_weights
from .writers import CogWriter, Compression, pam_xml, write_detections, write_text

__all__ = (
    'NODATA',
    'OUTPUTS',
    'PROBABILITY_SCALE',
    'STRIP_BYTES',
    'ClassGridOutput',
    'ClassRaster',
    'DetectionOutput',
    'MaskOutput',
    'OutputSettings',
    'ProbabilityRaster',
    'SceneOutput',
    'fill_uint8',
    'first_max_index',
)

logger = logging.getLogger(__name__)

#: Value of nodata pixels in class and probability rasters.
NODATA = 255

#: Probabilities are stored as ``round(p * 200)`` in uint8 (0.5 % steps), with a
#: GDAL band scale of ``1 / 200`` so that scaled readers see ``p``.
PROBABILITY_SCALE = 200

#: Columns blended at a time when rows are finished (bounds temporaries).
_FLUSH_COLUMNS = 4096

#: Most bytes of the strip of blended logits of a class raster: on a scene narrow
#: enough for it to hold several rows of windows, they are finished together (the
#: 900 px SpaceNet sample: in one go instead of 19 rows; issue 16).
STRIP_BYTES = 16 * 2**20


@dataclass(frozen=True)
class OutputSettings:
    """Where and how a scene's results are written.

    Attributes:
        reader: the scene (its grid, CRS and name).
        spec: the model's prediction spec (classes, colours, task).
        path: the class raster or detection file.
        probabilities: the probability raster, or None.
        size: window side in pixels.
        overlap: overlap of neighbouring windows.
        device: where blending runs (the model's device).
        style: write a ``.qml`` style (and class names) beside the output.
        compress: COG compression.
        blocksize: COG tile side.
        score_threshold: ``detect``: drop detections scoring below.
        iou_threshold: ``detect``: class-wise suppression threshold.

    .. versionadded:: 0.1
    """

    reader: SceneReader
    spec: PredictionSpec
    path: Path
    probabilities: Path | None
    size: int
    overlap: int
    device: torch.device
    style: bool = True
    compress: Compression = 'deflate'
    blocksize: int = 512
    score_threshold: float = 0.5
    iou_threshold: float = 0.5


class SceneOutput(Protocol):
    """Model outputs in, files out.

    .. versionadded:: 0.1
    """

    def add(self, tiles: Sequence[Tile], valid: Tensor, output: Any) -> None:
        """Take the model's output of one batch of windows.

        Args:
            tiles: the windows, in the scene's row-major order.
            valid: ``(B, size, size)`` valid input pixels of the windows.
            output: what the model returned for them.

        Raises:
            CheckpointError: If the output does not fit the spec.
        """

    def commit(self) -> tuple[int, int | None]:
        """Write the files under their final names.

        Returns:
            valid pixels (or cells) written, and the detections written (None
            unless ``detect``).
        """

    def abort(self) -> None:
        """Remove every temporary file (a no-op after :meth:`commit`)."""


def _raster_common(
    settings: OutputSettings, transform: Affine, width: int, height: int
) -> dict[str, Any]:
    """Options shared by the class and probability COGs."""
    spec = settings.spec
    return {
        'crs': settings.reader.crs,
        'transform': transform,
        'width': width,
        'height': height,
        'nodata': NODATA,
        'compress': settings.compress,
        'blocksize': settings.blocksize,
        'tags': {
            'TASK': spec.task,
            'CLASS_NAMES': json.dumps(list(spec.class_names)),
            'SCENE': settings.reader.name,
        },
    }


class ClassRaster:
    """Class indices as a uint8 COG with a colour table, class names and style.

    .. versionadded:: 0.1
    """

    def __init__(
        self, settings: OutputSettings, transform: Affine, width: int, height: int
    ) -> None:
        """Open the staging file on the grid *transform*, *width*, *height*."""
        spec = settings.spec
        colormap: dict[int, tuple[int, ...]] = {
            i: (*colour, 255) for i, colour in enumerate(spec.class_colours)
        }
        colormap[NODATA] = (0, 0, 0, 0)
        self.spec, self.style = spec, settings.style
        self.writer = CogWriter(
            settings.path,
            descriptions=('class',),
            colormap=colormap,
            overview_resampling='mode',
            **_raster_common(settings, transform, width, height),
        )

    def write(self, row: int, labels: npt.NDArray[np.uint8]) -> None:
        """Write full-width rows of class indices from *row* on."""
        self.writer.write(row, labels)

    def commit(self) -> None:
        """Finish the COG with its class names and style beside it."""
        spec = self.spec

        def sidecars() -> None:
            out = self.writer.path
            write_text(
                out.with_name(out.name + '.aux.xml'),
                pam_xml(spec.class_names, spec.class_colours),
            )
            write_qml(out, palette_qml(spec.class_names, spec.class_colours))

        self.writer.commit(sidecars if self.style else None)

    def abort(self) -> None:
        """Remove the temporary files."""
        self.writer.abort()


class ProbabilityRaster:
    """Class probabilities as a uint8 COG, one band per class.

    Values are scaled by :data:`PROBABILITY_SCALE`.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        settings: OutputSettings,
        path: Path,
        transform: Affine,
        width: int,
        height: int,
    ) -> None:
        """Open the staging file of *path* on the grid *transform*, *width*, *height*."""
        spec = settings.spec
        self.writer = CogWriter(
            path,
            count=spec.num_classes,
            descriptions=spec.class_names,
            scales=[1 / PROBABILITY_SCALE] * spec.num_classes,
            overview_resampling='average',
            **_raster_common(settings, transform, width, height),
        )

    def write(self, row: int, scores: npt.NDArray[np.uint8]) -> None:
        """Write full-width rows ``(classes, rows, width)`` from *row* on."""
        self.writer.write(row, scores)

    def commit(self) -> None:
        """Finish the COG."""
        self.writer.commit()

    def abort(self) -> None:
        """Remove the temporary files."""
        self.writer.abort()


class _Rasters:
    """The class raster and, if asked, the probability raster of one grid."""

    def __init__(
        self, settings: OutputSettings, transform: Affine, width: int, height: int
    ) -> None:
        self.classes = ClassRaster(settings, transform, width, height)
        self.probabilities: ProbabilityRaster | None = None
        if settings.probabilities is not None:
            try:
                self.probabilities = ProbabilityRaster(
                    settings, settings.probabilities, transform, width, height
                )
            except BaseException:
                self.classes.abort()
                raise

    def commit(self) -> None:
        """Finish the COGs, the class raster last (with its style and names)."""
        if self.probabilities is not None:
            self.probabilities.commit()
        self.classes.commit()

    def abort(self) -> None:
        """Remove the temporary files of both."""
        self.classes.abort()
        if self.probabilities is not None:
            self.probabilities.abort()


def _checked_logits(spec: PredictionSpec, logits: Any, rank: int) -> Tensor:
    """Logits as float32, checked against the spec's class count."""
    if not isinstance(logits, Tensor) or logits.ndim != rank:
        shape = getattr(logits, 'shape', type(logits).__name__)
        what = '(B, K, H, W)' if rank == 4 else '(B, K)'
        msg = f'the {spec.task} model returned {shape}; expected {what} logits'
        raise CheckpointError(msg)
    if logits.shape[1] != spec.num_classes:
        msg = (
            f'the model returns {logits.shape[1]} classes but its metadata names '
            f'{spec.num_classes} ({", ".join(spec.class_names)})'
        )
        raise CheckpointError(msg)
    return logits.float()


def fill_uint8(values: Tensor, mask: Tensor, value: int) -> Tensor:
    """``values.masked_fill_(mask, value)`` for uint8 values, by arithmetic.

    The same bytes; on the CPU ``masked_fill_`` of uint8 is not vectorised: ~40x
    slower over a row of the SpaceNet sample's 64 px windows (issue 16).

    Args:
        values: uint8 tensor, changed in place.
        mask: bool tensor broadcastable to *values*.
        value: the byte written where *mask* is true.

    Returns:
        *values*.

    .. versionadded:: 0.1
    """
    fill = mask.to(torch.uint8)
    return values.mul_(1 - fill).add_(fill.mul_(value))


def first_max_index(logits: Tensor) -> Tensor:
    """Class of each pixel: ``logits.max(dim=0).indices`` as uint8, faster.

    The index of the first of equal maxima, as :func:`torch.max` gives it, found
    with one comparison per class: on the CPU a reduction over a short leading
    dimension is not vectorised, and ``max(dim=0)`` over the 2 x 48 x 900 logits of
    a row of 64 px windows took ~12x the time of a comparison (issue 16). Logits
    holding NaN (or infinities, found by their sum) go to :func:`torch.max` itself
    (its NaN rule).

    Args:
        logits: ``(classes, ...)`` float logits, at most 255 classes.

    Returns:
        uint8 class indices of ``logits.shape[1:]``.

    .. versionadded:: 0.1

    .. versionchanged:: 0.1
       NaN found by the logits' sum; classes set by :func:`fill_uint8` (issue 16).
    """
    if not math.isfinite(float(logits.sum())):
        return logits.max(dim=0).indices.to(torch.uint8)
    if logits.shape[0] == 1:
        return torch.zeros(logits.shape[1:], dtype=torch.uint8, device=logits.device)
    best = logits[0]
    index = (logits[1] > best).to(torch.uint8)
    for k in range(2, logits.shape[0]):
        best = torch.maximum(best, logits[k - 1])
        fill_uint8(index, logits[k] > best, k)
    return index


class MaskOutput:
    """``segment``: window logits blended into class (and probability) rasters.

    .. versionadded:: 0.1
    """

    def __init__(self, settings: OutputSettings) -> None:
        """Open the rasters on the scene's grid and allocate one strip of logits."""
        reader = settings.reader
        self.settings = settings
        self.rasters = _Rasters(settings, reader.transform, reader.width, reader.height)
        classes = settings.spec.num_classes
        self.strip = StripAccumulator(
            classes,
            reader.height,
            reader.width,
            settings.size,
            settings.device,
            rows=min(reader.height, STRIP_BYTES // (4 * (classes + 1) * reader.width)),
        )
        #: blend weights per combination of scene edges (see :meth:`_blend`).
        self._blends: dict[tuple[bool, ...], Tensor] = {}
        #: the weights of a batch (see :meth:`_weight_buffer`).
        self._weights: Tensor | None = None
        #: a window off the scene's edges: the blend most windows share.
        self._inside = Tile(0, 0, 0, settings.size, settings.size, *[False] * 4)
        self.valid_pixels = 0

    def add(self, tiles: Sequence[Tile], valid: Tensor, output: Any) -> None:
        """Blend one batch of windows, writing the rows they finish."""
        size = self.settings.size
        logits = _checked_logits(self.settings.spec, output, 4)
        if logits.shape[-2:] != (size, size):
            logits = F.interpolate(
                logits, size=(size, size), mode='bilinear', align_corners=False
            )
        # Blend weights times the mask as bytes: the same products (by 1 or 0),
        # and on the CPU ~3x faster than by a bool tensor. Windows inside the
        # scene share one blend, so a batch is one product and its windows on
        # the scene edge one each (issue 16).
        masks = valid.view(torch.uint8)
        weights = self._weight_buffer(len(tiles), masks)
        torch.mul(self._blend(self._inside), masks, out=weights)
        for i, window in enumerate(tiles):
            if window.top or window.bottom or window.left or window.right:
                torch.mul(self._blend(window), masks[i], out=weights[i])
        for rows in self.strip.add_batch(tiles, logits, weights):
            self._write_rows(rows)

    def _weight_buffer(self, batch: int, masks: Tensor) -> Tensor:
        """A ``(batch, size, size)`` float buffer, kept between batches."""
        if self._weights is None or self._weights.shape[0] < batch:
            self._weights = torch.empty(batch, *masks.shape[-2:], device=masks.device)
        return self._weights[:batch]

    def _blend(self, window: Tile) -> Tensor:
        """The blend weights of *window* (one per combination of scene edges)."""
        key = (window.top, window.bottom, window.left, window.right)
        if key not in self._blends:
            self._blends[key] = torch.from_numpy(
                blend_weights(self.settings.size, self.settings.overlap, window)
            ).to(self.settings.device)
        return self._blends[key]

    def _write_rows(self, rows: FinishedRows) -> None:
        """Class index (and probabilities) of finished rows, nodata where invalid.

        Columns are blended in chunks, so temporaries stay small on wide scenes.
        """
        height, width = rows.height, self.settings.reader.width
        probabilities = self.rasters.probabilities
        labels = np.empty((height, width), dtype=np.uint8)
        scores = None
        if probabilities is not None:
            classes = self.settings.spec.num_classes
            scores = np.empty((classes, height, width), dtype=np.uint8)
        for start in range(0, width, _FLUSH_COLUMNS):
            cols = slice(start, min(start + _FLUSH_COLUMNS, width))
            logits = rows.logits(cols)
            invalid = ~rows.valid(cols)
            self.valid_pixels += invalid.numel() - int(invalid.sum())
            best = fill_uint8(first_max_index(logits), invalid, NODATA)
            labels[:, cols] = best.cpu().numpy()
            if scores is not None:
                scaled = logits.softmax(dim=0).mul_(PROBABILITY_SCALE).round_()
                scaled = fill_uint8(scaled.to(torch.uint8), invalid, NODATA)
                scores[:, :, cols] = scaled.cpu().numpy()
        self.rasters.classes.write(rows.row, labels)
        if probabilities is not None and scores is not None:
            probabilities.write(rows.row, scores)

    def commit(self) -> tuple[int, None]:
        """Write the last rows and finish the rasters."""
        for rows in self.strip.advance(self.settings.reader.height):
            self._write_rows(rows)
        self.rasters.commit()
        return self.valid_pixels, None

    def abort(self) -> None:
        """Remove the temporary files."""
        self.rasters.abort()


class ClassGridOutput:
    """``classify``: one class per cell into a coarse class (and probability) raster.

    .. versionadded:: 0.1
    """

    def __init__(self, settings: OutputSettings) -> None:
        """Allocate the grid of cells (the rasters are written at the end)."""
        reader, size = settings.reader, settings.size
        self.settings = settings
        self.rows = math.ceil(reader.height / size)
        self.cols = math.ceil(reader.width / size)
        shape = (self.rows, self.cols)
        self.labels: npt.NDArray[np.uint8] = np.full(shape, NODATA, dtype=np.uint8)
        self.scores: npt.NDArray[np.uint8] | None = None
        if settings.probabilities is not None:
            classes = settings.spec.num_classes
            self.scores = np.full((classes, *shape), NODATA, dtype=np.uint8)
        self.valid_cells = 0
        self.rasters: _Rasters | None = None

    def add(self, tiles: Sequence[Tile], valid: Tensor, output: Any) -> None:
        """Set the class (and probabilities) of the cells with a valid pixel."""
        size = self.settings.size
        logits = _checked_logits(self.settings.spec, output, 2)
        best = logits.max(dim=1).indices.to(torch.uint8).cpu().numpy()
        scaled = (
            (logits.softmax(dim=1) * PROBABILITY_SCALE)
            .round()
            .to(torch.uint8)
            .cpu()
            .numpy()
        )
        cell_valid = valid.cpu().numpy()
        for i, window in enumerate(tiles):
            row, col = divmod(window.number, self.cols)
            # The cell's own pixels inside its (possibly shifted) window.
            top, left = row * size - window.row, col * size - window.col
            if not cell_valid[i, top : top + size, left : left + size].any():
                continue
            self.labels[row, col] = best[i]
            if self.scores is not None:
                self.scores[:, row, col] = scaled[i]
            self.valid_cells += 1

    def commit(self) -> tuple[int, None]:
        """Write the class (and probability) raster of the cells."""
        transform = self.settings.reader.transform * Affine.scale(self.settings.size)
        self.rasters = _Rasters(self.settings, transform, self.cols, self.rows)
        self.rasters.classes.write(0, self.labels)
        if self.rasters.probabilities is not None and self.scores is not None:
            self.rasters.probabilities.write(0, self.scores)
        self.rasters.commit()
        return self.valid_cells, None

    def abort(self) -> None:
        """Remove the temporary files, if the rasters were opened."""
        if self.rasters is not None:
            self.rasters.abort()


class DetectionOutput:
    """``detect``: the boxes of all windows merged and written as polygons.

    .. versionadded:: 0.1
    """

    def __init__(self, settings: OutputSettings) -> None:
        """Start with no box."""
        self.settings = settings
        self.found = DetectionAccumulator(settings.score_threshold)

    def add(self, tiles: Sequence[Tile], valid: Tensor, output: Any) -> None:
        """Keep the boxes of one batch of windows."""
        spec = self.settings.spec
        if not isinstance(output, list | tuple) or len(output) != len(tiles):
            msg = (
                'the detection model returned '
                f'{type(output).__name__}; expected one dict of boxes, labels and '
                'scores per window'
            )
            raise CheckpointError(msg)
        masks = valid.cpu().numpy()
        for i, window in enumerate(tiles):
            result = output[i]
            labels = result['labels'].cpu().numpy()
            if labels.size and (labels.max() > spec.num_classes or labels.min() < 0):
                msg = (
                    f'the detection model returned label {labels.max()} but its '
                    f'metadata names {spec.num_classes} classes (labels 1..'
                    f'{spec.num_classes}, 0 = background)'
                )
                raise CheckpointError(msg)
            self.found.add(
                window,
                result['boxes'].float().cpu().numpy(),
                labels,
                result['scores'].float().cpu().numpy(),
                masks[i],
            )

    def commit(self) -> tuple[int, int]:
        """Merge the boxes over the scene and write them with their style."""
        settings, spec = self.settings, self.settings.spec
        boxes, labels, scores = self.found.merged(settings.iou_threshold)
        frame = detections_frame(
            boxes,
            labels,
            scores,
            transform=settings.reader.transform,
            crs=settings.reader.crs,
            class_names=spec.class_names,
            scene=settings.reader.name,
        )
        if settings.style:
            write_qml(
                settings.path, categorized_qml(spec.class_names, spec.class_colours)
            )
        write_detections(settings.path, frame)
        logger.info(
            '%d detections (from %d boxes) in %s',
            len(frame),
            len(self.found),
            settings.path,
        )
        return 0, len(frame)

    def abort(self) -> None:
        """Nothing to remove: the detection file is written whole at commit."""


#: The output of each task.
OUTPUTS: dict[Task, type[MaskOutput | ClassGridOutput | DetectionOutput]] = {
    'segment': MaskOutput,
    'classify': ClassGridOutput,
    'detect': DetectionOutput,
}
