"""Whole-scene prediction: :func:`predict_scene`.

The scene is streamed window by window (:mod:`dspt_geo.predict.tiling`), read on
demand on the CPU and by a reader thread that runs a few batches ahead of the model
for a GPU (:mod:`dspt_geo.predict.scene`).
Windows are normalised on the model's device exactly as in training
(:func:`dspt_geo.data.transforms.normalise`) and batched; on CUDA the model runs
under bf16 autocast. What is written depends on the spec's task: one
:class:`~dspt_geo.predict.outputs.SceneOutput` per task
(:data:`~dspt_geo.predict.outputs.OUTPUTS`) takes the model's outputs batch by
batch and writes the class raster (``segment``), the coarse class grid
(``classify``) or the detections (``detect``), with their styles.

Windows are the training tile's size unless told otherwise; ``tile='auto'`` lets
a model that takes any multiple of its patch size run larger windows where that
is faster and gives the same result (:mod:`dspt_geo.predict.autotile`). A
detector's proposals and detections per window follow the window's area
(:func:`dspt_geo.predict.detections.detection_limits`).

Peak memory depends on the window size, batch size and scene *width* (one strip of
logits, ``tile`` rows or up to :data:`~dspt_geo.predict.outputs.STRIP_BYTES`; the
rows read at once, to the end of a row of the file's blocks, at most
:data:`~dspt_geo.predict.scene.READ_AHEAD_BYTES`; one row of input blocks in GDAL's
cache, see :data:`GDAL_CACHE_MIN_MB`), never on the scene's area.
"""

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
import rasterio.env
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..data.transforms import normalise
from ..errors import ConfigError
from .autotile import choose_tile, sized_to_window
from .outputs import NODATA, OUTPUTS, PROBABILITY_SCALE, OutputSettings
from .qgis import style_path
from .scene import SceneReader, iter_batches
from .spec import PredictionSpec
from .tiling import Tile, TileGrid, cell_tiles
from .writers import RASTER_SUFFIXES, VECTOR_DRIVERS, Compression, check_outputs

__all__ = (
    'BATCH_PIXELS',
    'GDAL_CACHE_MAX_MB',
    'GDAL_CACHE_MIN_MB',
    'NODATA',
    'PROBABILITY_SCALE',
    'PredictionResult',
    'default_batch_size',
    'predict_scene',
)

logger = logging.getLogger(__name__)

#: Bounds (MB) of GDAL's block cache while predicting, unless the user sets
#: ``GDAL_CACHEMAX``: 1.5 x the blocks of one row of windows, within these.
GDAL_CACHE_MIN_MB = 64
GDAL_CACHE_MAX_MB = 1024

#: Pixels per model call when no batch size is given (see
#: :func:`default_batch_size`).
BATCH_PIXELS = 2**17


@dataclass(frozen=True)
class PredictionResult:
    """What :func:`predict_scene` wrote.

    Attributes:
        output: the class raster or detection file.
        probabilities: the probability raster, if requested.
        style: the ``.qml`` style beside *output*.
        sidecars: other files beside *output* (the ``.aux.xml`` with class names).
        windows: windows in the scene's grid.
        windows_run: windows the model ran on (the others held no valid pixel).
        valid_pixels: valid pixels written (rasters) or 0.
        detections: features written (detection), else None.
        all_nodata: the scene held no valid pixel; the output is all nodata.
        seconds: wall time.
        tile: window side used, in pixels.
        batch_size: windows per model call used.

    .. versionadded:: 0.1

    .. versionchanged:: 0.1
       Added *tile* and *batch_size* (issue 16).
    """

    output: Path
    probabilities: Path | None
    style: Path | None
    sidecars: tuple[Path, ...]
    windows: int
    windows_run: int
    valid_pixels: int
    detections: int | None
    all_nodata: bool
    seconds: float
    tile: int | None = None
    batch_size: int | None = None

    @property
    def paths(self) -> tuple[Path, ...]:
        """Every file written."""
        extra = (self.probabilities, self.style)
        return (self.output, *(p for p in extra if p is not None), *self.sidecars)

    @property
    def layers(self) -> tuple[Path, ...]:
        """The map layers written (for a QGIS project), main output first."""
        return (self.output, *([self.probabilities] if self.probabilities else []))


def default_batch_size(size: int, device: torch.device) -> int:
    """Windows of *size* pixels per model call when the batch size is not given.

    About :data:`BATCH_PIXELS` pixels: 32 windows of 64 px, 2 of 256 px, 1 of 362
    px or more. On the CPU the model's calls then cost the same per pixel at
    every window size, and the pipeline's work per call is spread over more
    windows (issue 16, the SpaceNet sample with the fine-tuned tiny ViT +
    UperNet: 64 px windows 0.43 s at 32 per call against 0.62 s at 8; 256 px
    windows 0.31 s at 2 against 0.35 s at 8). On a GPU, at least 8.

    Args:
        size: window side in pixels.
        device: where the model runs.

    Returns:
        the batch size.

    .. versionadded:: 0.1
    """
    batch = max(1, round(BATCH_PIXELS / size**2))
    return batch if device.type == 'cpu' else max(8, batch)


def probabilities_path(path: str | os.PathLike[str]) -> Path:
    """Where the probabilities of the class raster *path* go."""
    path = Path(path)
    return path.with_name(f'{path.stem}_probabilities{path.suffix}')


def _gdal_env(
    reader: SceneReader, size: int
) -> rasterio.Env | contextlib.nullcontext[None]:
    """Size GDAL's block cache to a row of windows, unless the user configured it.

    The cache holds the blocks of the rows being read (windows overlap, so each
    block is decoded once) and, at the end, what the COG conversion needs. GDAL's
    default (5 % of RAM) would let it fill with blocks never read again.
    """
    configured = 'GDAL_CACHEMAX' in os.environ or (
        rasterio.env.hasenv() and 'GDAL_CACHEMAX' in rasterio.env.getenv()
    )
    if configured:
        return contextlib.nullcontext()
    rows = size + 2 * reader.block_height
    needed = rows * reader.row_bytes / 2**20
    cache = int(min(GDAL_CACHE_MAX_MB, max(GDAL_CACHE_MIN_MB, 1.5 * needed)))
    return rasterio.Env(GDAL_CACHEMAX=cache)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put *model* in eval mode, restoring its mode afterwards."""
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def predict_scene(
    scene_path: str | os.PathLike[str],
    model: nn.Module,
    spec: PredictionSpec,
    out_path: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    tile: int | Literal['auto'] | None = None,
    overlap: int | None = None,
    probabilities: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    score_threshold: float | None = None,
    iou_threshold: float = 0.5,
    compress: Compression = 'deflate',
    style: bool = True,
    blocksize: int = 512,
    max_objects: int | None = None,
) -> PredictionResult:
    """Run *model* over a whole scene and write georeferenced, styled outputs.

    Args:
        scene_path: a raster GDAL can read, with the model's bands.
        model: segmentation ``(B, C, H, W) -> (B, K, H, W)`` logits (other output
            sizes are resized bilinearly), classification ``-> (B, K)`` logits, or
            detection ``-> [{'boxes' (N, 4) xyxy window pixels, 'labels' (N,)
            1..K, 'scores' (N,)}]``; it is moved to *device* and run in eval mode.
        spec: the model's prediction spec.
        out_path: ``.tif`` for ``segment``/``classify``; ``.gpkg``, ``.geojson``
            or ``.fgb`` for ``detect``.
        device: torch device (default: CUDA when available, else the CPU).
        batch_size: windows per model call (default: :func:`default_batch_size`
            of the window size).
        tile: window side in pixels (default: the spec's), or ``'auto'``: the
            fastest of larger windows that agree with the spec's tiling, when the
            model takes them (:func:`~dspt_geo.predict.autotile.choose_tile`).
        overlap: overlap of neighbouring windows (default: the spec's; ignored by
            ``classify``, whose cells do not overlap).
        probabilities: also write ``<stem>_probabilities.tif`` (``segment`` and
            ``classify``): one uint8 band per class, see :data:`PROBABILITY_SCALE`.
        overwrite: replace existing outputs.
        progress: show a progress bar over windows (stderr).
        score_threshold: drop detections scoring below (default: the spec's).
        iou_threshold: class-wise suppression threshold for detections.
        compress: COG compression, ``'deflate'`` or ``'zstd'``.
        style: write a ``.qml`` style (and class names) beside the output.
        blocksize: COG tile side.
        max_objects: ``detect``: most objects one training tile holds, which
            sizes the detector's proposals and detections per window (default:
            the spec's, counted from the training labels; see
            :func:`~dspt_geo.predict.detections.detection_limits`).

    Returns:
        the files written and counts.

    Raises:
        RasterReadError: If GDAL cannot open the scene.
        IncompatibleRasterError: If the scene is not georeferenced or its bands do
            not fit the model.
        CheckpointError: If the model's outputs do not fit the spec.
        ConfigError: If an option is invalid (sizes, output extension).
        DsptGeoError: If an output exists (without *overwrite*) or cannot be written.

    .. versionadded:: 0.1

    .. versionchanged:: 0.1
       *tile* may be ``'auto'``; added *max_objects*; *batch_size* follows the
       window size by default (issue 16).
    """
    started = time.perf_counter()
    auto = tile == 'auto'
    size = spec.tile if tile is None or auto else int(tile)
    overlap = spec.overlap if overlap is None else int(overlap)
    if max_objects is not None and max_objects < 0:
        msg = f'max_objects must be >= 0, got {max_objects}'
        raise ConfigError(msg)
    if (
        size < 1
        or not 0 <= overlap < size
        or (batch_size is not None and batch_size < 1)
    ):
        msg = f'need tile >= 1, 0 <= overlap < tile and batch_size >= 1; got {size, overlap, batch_size}'
        raise ConfigError(msg)
    out_path = Path(out_path)
    suffix = out_path.suffix.lower()
    if spec.task == 'detect':
        if suffix not in VECTOR_DRIVERS:
            msg = f'detections go to a {", ".join(VECTOR_DRIVERS)} file, not {out_path.name}'
            raise ConfigError(msg)
        if probabilities:
            logger.warning('probabilities are not written for detection; ignoring them')
            probabilities = False
    elif suffix not in RASTER_SUFFIXES:
        msg = f'{spec.task} results go to a .tif file, not {out_path.name}'
        raise ConfigError(msg)
    probs_path = probabilities_path(out_path) if probabilities else None
    qml_path = style_path(out_path) if style else None
    aux_path = (
        out_path.with_name(out_path.name + '.aux.xml')
        if style and spec.task != 'detect'
        else None
    )
    check_outputs(
        [p for p in (out_path, probs_path, qml_path, aux_path) if p is not None],
        overwrite,
    )
    device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))

    with (
        SceneReader(scene_path, spec) as reader,
        _gdal_env(reader, size),
        _eval_mode(model),
    ):
        out_path.parent.mkdir(parents=True, exist_ok=True)  # checked above
        model.to(device)
        if auto:
            size = choose_tile(
                model, spec, reader, overlap, device, max_objects, score_threshold
            )
        batch_size = batch_size or default_batch_size(size, device)
        tiles = (
            cell_tiles(reader.height, reader.width, size)
            if spec.task == 'classify'
            else list(TileGrid(reader.height, reader.width, size, overlap))
        )
        logger.info(
            'predicting %s (%d x %d px) in %d windows of %d px, %d per call, on %s',
            reader.path, reader.width, reader.height, len(tiles), size, batch_size,
            device,
        )  # fmt: skip
        settings = OutputSettings(
            reader=reader, spec=spec, path=out_path, probabilities=probs_path,
            size=size, overlap=overlap, device=device, style=style,
            compress=compress, blocksize=blocksize, iou_threshold=iou_threshold,
            score_threshold=(
                spec.score_threshold if score_threshold is None else score_threshold
            ),
        )  # fmt: skip
        output = OUTPUTS[spec.task](settings)
        bar = tqdm(
            total=len(tiles), unit='window', desc=reader.name, disable=not progress
        )
        windows_run = 0
        try:
            with bar, sized_to_window(model, spec, size, max_objects, log=True):
                batches = _Batches(reader, model, spec, device, size, batch_size)
                for batch_tiles, valid, result in batches(tiles, bar):
                    output.add(batch_tiles, valid, result)
                    windows_run += len(batch_tiles)
            valid_pixels, detections = output.commit()
        except BaseException:
            output.abort()
            raise
    sidecars = (aux_path,) if aux_path is not None else ()
    all_nodata = windows_run == 0
    if all_nodata:
        logger.warning(
            '%s holds no valid pixel (nodata %s): wrote an all-nodata result to %s',
            scene_path, reader.nodata, out_path,
        )  # fmt: skip
    seconds = time.perf_counter() - started
    logger.info(
        'wrote %s: %d of %d windows run in %.1f s',
        out_path,
        windows_run,
        len(tiles),
        seconds,
    )
    return PredictionResult(
        output=out_path,
        probabilities=probs_path,
        style=qml_path,
        sidecars=sidecars,
        windows=len(tiles),
        windows_run=windows_run,
        valid_pixels=valid_pixels,
        detections=detections,
        all_nodata=all_nodata,
        seconds=seconds,
        tile=size,
        batch_size=batch_size,
    )


class _Batches:
    """Batches in, model outputs out: the loop shared by the three tasks."""

    def __init__(
        self,
        reader: SceneReader,
        model: nn.Module,
        spec: PredictionSpec,
        device: torch.device,
        size: int,
        batch_size: int,
    ) -> None:
        self.reader = reader
        self.model = model
        self.spec = spec
        self.device = device
        self.size = size
        self.batch_size = batch_size

    def __call__(
        self, tiles: list[Tile], bar: Any
    ) -> Iterator[tuple[list[Tile], Tensor, Any]]:
        """Model outputs per batch: the tiles, their valid masks, the raw output."""
        autocast = (
            torch.autocast('cuda', dtype=torch.bfloat16)
            if self.device.type == 'cuda'
            else contextlib.nullcontext()
        )
        on_cpu = self.device.type == 'cpu'
        stats = self.spec.statistics

        def prepare(images: np.ndarray, valid: np.ndarray) -> tuple[Tensor, Tensor]:
            # For a GPU this runs in the reader thread, and pinned memory lets the
            # copy run asynchronously.
            images_t, valid_t = torch.from_numpy(images), torch.from_numpy(valid)
            if on_cpu:
                with torch.inference_mode():
                    return normalise(images_t, valid_t, stats), valid_t
            return images_t.pin_memory(), valid_t.pin_memory()

        # On the CPU the model's threads use every core: a reader thread would only
        # take CPU time and the GIL from them, so batches are read on demand
        # (issue 16: 0.595 s instead of 0.606 s for the SpaceNet sample).
        batches = iter_batches(
            self.reader, tiles, self.size, self.batch_size,
            prefetch=0 if on_cpu else 2, prepare=prepare,
        )  # fmt: skip
        for batch in batches:
            if batch.tiles:
                images, valid = batch.images, batch.valid
                with torch.inference_mode(), autocast:
                    if not on_cpu:
                        images = images.to(self.device, non_blocking=True)
                        valid = valid.to(self.device, non_blocking=True)
                        images = normalise(images, valid, stats)
                    output = self.model(images)
                yield batch.tiles, valid, output
            bar.update(len(batch.tiles) + batch.skipped)
