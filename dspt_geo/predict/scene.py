"""Reading a scene window by window, the way training read its patches.

:class:`SceneReader` opens a scene, checks that its band layout fits the model
(bands selected by name when the scene names them, else the same band count),
and reads windows as float32 with a valid-pixel mask computed as
:meth:`dspt_geo.data.SensorDataset.valid_mask` does: finite in every band and not
nodata in all bands (nodata is the scene's, else training's). SAR scenes are
converted as training converted them (the model's ``sar_scale`` and ``sar_mode``).

Scenes are read on their own grid. When the model records its training pixel size
and the scene's differs by more than :data:`RES_TOLERANCE` times, the scene is read
through a :class:`~rasterio.vrt.WarpedVRT` at the training pixel size (same CRS and
extent, bilinear resampling), and outputs are written on that grid.

:func:`iter_batches` reads batches of windows, skipping windows without a valid
pixel, in a thread that stays a few batches ahead of the model or on demand.
"""

import logging
import math
import os
import queue
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, Self

import numpy as np
import numpy.typing as npt
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from ..data.dataset import valid_pixels
from ..data.sar import SarConversion
from ..errors import IncompatibleRasterError, RasterReadError
from .spec import PredictionSpec
from .tiling import Tile

__all__ = (
    'READ_AHEAD_BYTES',
    'READ_AHEAD_ROWS',
    'RES_TOLERANCE',
    'Batch',
    'SceneReader',
    'iter_batches',
    'select_bands',
)

logger = logging.getLogger(__name__)

#: A scene whose pixel size differs from training's by more than this factor is
#: resampled to training's.
RES_TOLERANCE = 1.5

#: Most bytes (as stored) of a scene's rows read at once, to the end of a row of
#: its blocks (see :meth:`SceneReader._rows`).
READ_AHEAD_BYTES = 256 * 2**20

#: Fewest rows read at once (within :data:`READ_AHEAD_BYTES`): a file of thin
#: strips is read in a few calls, not one per row of windows.
READ_AHEAD_ROWS = 256


def select_bands(
    descriptions: Sequence[str | None], bands: Sequence[str], name: str = 'scene'
) -> list[int]:
    """The scene bands (1-based) that feed the model's bands, in the model's order.

    By name when the scene's band descriptions hold every model band
    (case-insensitive), else all bands in file order when the counts match.

    Args:
        descriptions: the scene's band descriptions (``None`` or ``''`` when unset).
        bands: the model's band names.
        name: the scene, for messages.

    Returns:
        1-based band indexes.

    Raises:
        IncompatibleRasterError: If the bands cannot be matched by name and the
            counts differ, or if the scene names all its bands differently from
            the model's (a different band layout).

    .. versionadded:: 0.1
    """
    names = [(d or '').strip().lower() for d in descriptions]
    wanted = [b.strip().lower() for b in bands]
    if all(w in names for w in wanted):
        return [names.index(w) + 1 for w in wanted]
    shown = ', '.join(d or '?' for d in descriptions)
    generic = all(w == f'band_{i + 1}' for i, w in enumerate(wanted))
    if len(descriptions) == len(bands):
        if all(names) and not generic:
            msg = (
                f'{name} has bands ({shown}) but the model was trained on '
                f'({", ".join(bands)}); give a scene with these bands, or clear its '
                'band descriptions if they are the same bands under other names'
            )
            raise IncompatibleRasterError(msg)
        return list(range(1, len(bands) + 1))
    msg = (
        f'{name} has {len(descriptions)} bands ({shown}) but the model expects '
        f'{len(bands)} ({", ".join(bands)}); give a scene with exactly these bands '
        'in this order, or name its bands (band descriptions) so they are selected'
    )
    raise IncompatibleRasterError(msg)


def _pixel_size_m(
    crs: CRS, transform: Affine, height: int
) -> tuple[float, float] | None:
    """Approximate pixel size in metres (None when the CRS has no known unit)."""
    size_x = math.hypot(transform.a, transform.d)
    size_y = math.hypot(transform.b, transform.e)
    if crs.is_geographic:
        latitude = transform.f + transform.e * height / 2
        metres = 111_320.0 * math.cos(math.radians(max(-89.0, min(89.0, latitude))))
        return size_x * metres, size_y * 110_574.0
    try:
        _, factor = crs.linear_units_factor
    except Exception:  # noqa: BLE001 (rasterio raises CRSError or a bare Exception)
        return None
    return size_x * factor, size_y * factor


class SceneReader:
    """Windowed reads of one scene, fed to a model trained per a spec.

    Attributes:
        path: the scene.
        crs: CRS of the grid read.
        transform: geotransform of the grid read.
        width: columns of the grid read.
        height: rows of the grid read.
        indexes: scene bands (1-based) feeding the model, in its order.
        nodata: value marking missing pixels, or None.
        warped: whether the scene is resampled to the training pixel size.
        block_height: rows of the file's blocks.
        row_bytes: bytes of one decoded row of the file, all bands.

    .. versionadded:: 0.1
    """

    def __init__(self, path: str | os.PathLike[str], spec: PredictionSpec) -> None:
        """Open the scene and check it against the spec.

        Args:
            path: a raster GDAL can read.
            spec: the model's prediction spec.

        Raises:
            RasterReadError: If GDAL cannot open the scene.
            IncompatibleRasterError: If it is not georeferenced or does not fit
                the model's bands or data type.
        """
        self.path = os.fspath(path)
        try:
            with warnings.catch_warnings():
                # An ungeoreferenced scene is refused below, with a clearer message.
                warnings.simplefilter('ignore', NotGeoreferencedWarning)
                self._src: DatasetReader = rasterio.open(self.path)
        except RasterioIOError as error:
            msg = f'GDAL cannot open {self.path} as a raster: {error}'
            raise RasterReadError(msg) from error
        try:
            self._setup(spec)
        except BaseException:
            self._src.close()
            raise

    def _setup(self, spec: PredictionSpec) -> None:
        """Check the scene and choose bands, nodata and grid."""
        src = self._src
        name = os.path.basename(self.path)
        if src.crs is None or src.transform.is_identity:
            msg = (
                f'{self.path} is not georeferenced (no CRS or geotransform); '
                'outputs could not be placed on a map'
            )
            raise IncompatibleRasterError(msg)
        self.indexes = select_bands(src.descriptions, spec.bands, name)
        complex_scene = any(
            np.dtype(src.dtypes[i - 1]).kind == 'c' for i in self.indexes
        )
        if complex_scene and spec.sar is None:
            msg = (
                f'{name} holds complex SAR ({src.dtypes[0]}) but the model was trained '
                'on real-valued rasters'
            )
            raise IncompatibleRasterError(msg)
        if not complex_scene and spec.sar is not None and spec.sar.scale == 'complex':
            msg = (
                f'{name} holds real values ({src.dtypes[0]}) but the model was trained '
                f'on complex SAR converted to {spec.sar.mode!r}; give the complex scene'
            )
            raise IncompatibleRasterError(msg)
        #: How stored samples become what the model saw (None: as stored).
        self.sar: SarConversion | None = (
            SarConversion('complex', spec.sar.mode)
            if complex_scene and spec.sar is not None
            else spec.sar
        )
        self.nodata: float | None = (
            src.nodata if src.nodata is not None else spec.nodata
        )
        flags = src.mask_flag_enums[self.indexes[0] - 1]
        self._mask_band = MaskFlags.per_dataset in flags or MaskFlags.alpha in flags
        self.warped = False
        #: the last rows read (see :meth:`_rows`): their first row, values and mask.
        self._chunk: tuple[int, npt.NDArray[Any], npt.NDArray[np.bool_]] | None = None
        self._dataset: DatasetReader | WarpedVRT = src
        if spec.res is not None:
            self._maybe_warp(spec.res, complex_scene)
        self.crs: CRS = self._dataset.crs
        self.transform: Affine = self._dataset.transform
        self.width: int = self._dataset.width
        self.height: int = self._dataset.height
        #: rows of the stored blocks (GDAL decodes whole blocks).
        self.block_height: int = src.block_shapes[0][0]
        #: bytes of one decoded row of the file, all bands.
        self.row_bytes: int = src.width * sum(np.dtype(d).itemsize for d in src.dtypes)

    def _maybe_warp(self, train_res: tuple[float, float], complex_scene: bool) -> None:
        """Resample to the training pixel size when the scene's is far from it."""
        src = self._src
        scene_res = _pixel_size_m(src.crs, src.transform, src.height)
        if scene_res is None:
            logger.warning(
                'cannot tell the pixel size of %s in metres; reading it as it is',
                self.path,
            )
            return
        scale_x, scale_y = (t / s for t, s in zip(train_res, scene_res, strict=True))
        if max(scale_x, 1 / scale_x, scale_y, 1 / scale_y) <= RES_TOLERANCE:
            return
        width = max(1, round(src.width / scale_x))
        height = max(1, round(src.height / scale_y))
        transform = src.transform * Affine.scale(src.width / width, src.height / height)
        logger.warning(
            '%s has %.3g x %.3g m pixels, the model was trained on %.3g x %.3g m: '
            'resampling it to %d x %d pixels (outputs use that grid)',
            self.path, *scene_res, *train_res, width, height,
        )  # fmt: skip
        self._dataset = WarpedVRT(
            src,
            crs=src.crs,
            transform=transform,
            width=width,
            height=height,
            nodata=self.nodata,
            resampling=Resampling.nearest if complex_scene else Resampling.bilinear,
        )
        self.warped = True

    @property
    def name(self) -> str:
        """The scene's file name."""
        return os.path.basename(self.path)

    def read(
        self,
        tile: Tile,
        size: int,
        image: npt.NDArray[np.float32] | None = None,
        valid: npt.NDArray[np.bool_] | None = None,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """Read one window, padded to *size* when the scene is smaller.

        Args:
            tile: the window.
            size: window side in pixels.
            image: ``(C, size, size)`` float32 array to fill (default: a new one).
            valid: ``(size, size)`` bool array to fill (default: a new one).

        Returns:
            the float32 image (0 where padded) and the valid mask (False where
            padded).
        """
        channels = len(self.indexes)
        if image is None:
            image = np.empty((channels, size, size), dtype=np.float32)
        if valid is None:
            valid = np.empty((size, size), dtype=bool)
        if self.warped:
            # Warped values are computed per request: read the window itself.
            window = Window(tile.col, tile.row, tile.width, tile.height)
            data, mask = self._read(window)
        else:
            rows, row_mask = self._rows(tile.row, tile.height)
            cols = slice(tile.col, tile.col + tile.width)
            data, mask = rows[:, :, cols], row_mask[:, cols]
        h, w = tile.height, tile.width
        if h < size or w < size:
            image.fill(0)
            valid.fill(False)
        image[:, :h, :w] = data  # the one conversion to float32
        valid[:h, :w] = mask
        return image, valid

    def _read(self, window: Window) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
        """Values of *window* as the model saw them (SAR converted), and their mask."""
        data = self._dataset.read(self.indexes, window=window)
        if self.sar is not None:
            data = self.sar.apply(data, self.nodata)
        mask = valid_pixels(data, self.nodata)
        if self._mask_band:
            mask &= self._dataset.read_masks(self.indexes[0], window=window) > 0
        return data, mask

    def _rows(
        self, row: int, height: int
    ) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
        """Full-width rows ``row:row + height``, read once for all their windows.

        A row of windows is read in one call rather than one per window (issue 16:
        GDAL's per-call cost and the reader thread's CPU time, which the model's
        threads share on a small machine, dominated reading); the values and
        masks are those of each window's own read.

        Reads take at least :data:`READ_AHEAD_ROWS` rows and end at the end of a
        row of the file's blocks (up to :data:`READ_AHEAD_BYTES`); later rows of
        windows inside are served from them. GDAL decodes every compressed block
        a full-width read covers without keeping it in its block cache (GDAL
        3.10, tiled GeoTIFF), so rows of windows read one by one decoded each
        block about ``block / stride`` times (issue 16: 43 reads of 64 x 2048 px
        from 512 px zstd tiles took 105 ms, the whole scene in one read 21 ms).
        """
        chunk = self._chunk
        if chunk is None or not (
            chunk[0] <= row and row + height <= chunk[0] + chunk[1].shape[1]
        ):
            end = row + height
            wanted = max(end, row + READ_AHEAD_ROWS)
            block_end = min(
                self.height, -(-wanted // self.block_height) * self.block_height
            )
            ahead = row + READ_AHEAD_BYTES // max(1, self.row_bytes)
            end = max(end, min(block_end, ahead))
            chunk = (row, *self._read(Window(0, row, self.width, end - row)))
            self._chunk = chunk
        first, data, mask = chunk
        rows = slice(row - first, row - first + height)
        return data[:, rows], mask[rows]

    def close(self) -> None:
        """Close the scene."""
        if self._dataset is not self._src:
            self._dataset.close()
        self._src.close()

    def __enter__(self) -> Self:
        """Use as a context manager."""
        return self

    def __exit__(self, *args: object) -> None:
        """Close the scene."""
        self.close()


class Batch(NamedTuple):
    """Windows read for one model call.

    ``skipped`` counts the windows without a valid pixel passed over since the
    previous batch; the last batch may hold no window.
    """

    tiles: list[Tile]
    #: ``(B, C, size, size)`` float32 array, or what *prepare* made of it.
    images: Any
    #: ``(B, size, size)`` bool array, or what *prepare* made of it.
    valid: Any
    skipped: int


_DONE = object()


def iter_batches(
    reader: SceneReader,
    tiles: Iterable[Tile],
    size: int,
    batch_size: int,
    prefetch: int = 2,
    prepare: Callable[[npt.NDArray[np.float32], npt.NDArray[np.bool_]], tuple[Any, Any]]
    | None = None,
) -> Iterator[Batch]:
    """Batches of windows with a valid pixel, read ahead by a thread or on demand.

    With *prefetch* > 0 a thread reads ahead and at most *prefetch* batches wait in
    memory; closing the generator early stops the thread. With 0 each batch is
    read in the caller's thread when it is asked for: where the model's threads
    use every core (the CPU), a reader thread only takes CPU time and the GIL
    from them (issue 16).

    Args:
        reader: the scene.
        tiles: windows in order.
        size: window side in pixels.
        batch_size: windows per batch.
        prefetch: batches read ahead by a thread (0: no thread).
        prepare: run on each batch's images and mask where they are read (e.g.
            tensors normalised on the CPU, or pinned for a copy to the GPU).

    Yields:
        batches in window order.

    .. versionadded:: 0.1

    .. versionchanged:: 0.1
       *prefetch* 0 reads in the caller's thread (issue 16).
    """
    batches = _read_batches(reader, tiles, size, batch_size, prepare)
    if prefetch < 1:
        yield from batches
        return
    ready: queue.Queue[Any] = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    return
            put(_DONE)
        except BaseException as error:  # noqa: BLE001 (re-raised in the consumer)
            put(error)

    thread = threading.Thread(target=work, name='dspt-geo-reader', daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def _read_batches(
    reader: SceneReader,
    tiles: Iterable[Tile],
    size: int,
    batch_size: int,
    prepare: Callable[[npt.NDArray[np.float32], npt.NDArray[np.bool_]], tuple[Any, Any]]
    | None,
) -> Iterator[Batch]:
    """The batches of :func:`iter_batches`, read in the calling thread."""

    def make(
        chosen: list[Tile],
        images: npt.NDArray[np.float32],
        masks: npt.NDArray[np.bool_],
        skipped: int,
    ) -> Batch:
        if prepare is not None and chosen:
            return Batch(chosen, *prepare(images, masks), skipped)
        return Batch(chosen, images, masks, skipped)

    channels = len(reader.indexes)

    def buffers() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        return (
            np.empty((batch_size, channels, size, size), dtype=np.float32),
            np.empty((batch_size, size, size), dtype=bool),
        )

    chosen: list[Tile] = []
    skipped = 0
    # Windows are read straight into the batch (no copy to stack them).
    images, masks = buffers()
    for tile in tiles:
        slot = len(chosen)
        reader.read(tile, size, images[slot], masks[slot])
        if not masks[slot].any():
            skipped += 1
            continue
        chosen.append(tile)
        if len(chosen) == batch_size:
            yield make(chosen, images, masks, skipped)
            chosen, skipped = [], 0
            images, masks = buffers()
    if chosen or skipped:
        count = len(chosen)
        yield make(chosen, images[:count], masks[:count], skipped)
