"""Writing prediction outputs atomically: class rasters as COGs, detections as vectors.

Every output is written under a hidden temporary name in its own folder
(``.<name>.<random>.tmp<suffix>``) and renamed over the final name only when it is
complete, so a killed run leaves at most a hidden temporary file, never a
half-written file under the final name.

:class:`CogWriter` takes rows as they are finished (a strip at a time), stores
them in memory (small rasters) or in a striped, lightly compressed temporary
GeoTIFF, and at the end converts that with GDAL's COG driver: tiled, DEFLATE or ZSTD with a predictor, internal
overviews (mode for classes), colour table, band descriptions. The mode
overviews of a raster held in memory are computed by
:mod:`~dspt_geo.predict.overviews` (the same values as GDAL's, faster). Class
names also go into a raster attribute table and category names in the PAM sidecar
``<name>.aux.xml``, which GDAL (and QGIS 3.30+) read; GeoTIFF cannot hold them.
:func:`write_detections` writes a GeoPackage (version 1.3, with an R-tree spatial
index), GeoJSON or FlatGeobuf file, chosen by the file extension.
"""

import logging
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self
from xml.sax.saxutils import escape

import numpy as np
import numpy.typing as npt
import pyogrio
import rasterio
import rasterio.shutil
from affine import Affine
from geopandas import GeoDataFrame
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.io import MemoryFile
from rasterio.windows import Window

from ..errors import DsptGeoError
from ..outputs import check_output_path
from .overviews import cog_overview_sizes, mode_overviews

__all__ = (
    'RASTER_SUFFIXES',
    'VECTOR_DRIVERS',
    'CogWriter',
    'atomic_path',
    'check_outputs',
    'pam_xml',
    'temp_path',
    'write_detections',
    'write_text',
)

logger = logging.getLogger(__name__)

#: Vector formats by file extension.
VECTOR_DRIVERS: dict[str, str] = {
    '.gpkg': 'GPKG',
    '.geojson': 'GeoJSON',
    '.json': 'GeoJSON',
    '.fgb': 'FlatGeobuf',
}

#: Extensions of raster outputs (always GeoTIFF).
RASTER_SUFFIXES = ('.tif', '.tiff')

Compression = Literal['deflate', 'zstd']

#: Rows per strip of the staging GeoTIFF: small, so a finished strip is written
#: out at once rather than held in GDAL's cache.
_STAGING_ROWS = 16

#: COGs of at most this many of their tiles whose overviews GDAL computes are
#: encoded on one thread: for a small raster GDAL's worker threads cost more than
#: they save (the 900 px class raster of the SpaceNet sample: 20 ms with all CPUs,
#: 15 ms with one, 2 cores).
_ONE_THREAD_TILES = 16

#: Rasters of at most this many pixels are staged in memory (4 MB per uint8
#: band, twice at the end: the rows and GDAL's copy), larger ones in a striped,
#: compressed temporary GeoTIFF, so that memory stays bounded by the scene's width.
_MEMORY_PIXELS = 2048 * 2048


def temp_path(path: str | os.PathLike[str]) -> Path:
    """A hidden, unique sibling of *path* with the same extension."""
    path = Path(path)
    return path.with_name(f'.{path.stem}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}')


def _remove(path: Path) -> None:
    """Remove *path* and the sidecars GDAL or SQLite may leave beside it."""
    for candidate in (
        path,
        path.with_name(path.name + '.aux.xml'),
        path.with_name(path.name + '.ovr'),
        path.with_name(path.name + '-journal'),
        path.with_name(path.name + '-wal'),
        path.with_name(path.name + '-shm'),
    ):
        candidate.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path that becomes *path* when the block completes.

    Args:
        path: the final file.

    Yields:
        where to write; renamed over *path* on success, removed on failure.
    """
    path = Path(path)
    temp = temp_path(path)
    try:
        yield temp
        os.replace(temp, path)
    finally:
        _remove(temp)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write a text file atomically.

    Args:
        path: the file.
        text: its content (UTF-8).

    Returns:
        *path*.
    """
    path = Path(path)
    with atomic_path(path) as temp:
        temp.write_text(text, encoding='utf-8')
    return path


def check_outputs(
    paths: Sequence[str | os.PathLike[str]], overwrite: bool, option: str = 'output'
) -> None:
    """Fail early when an output exists or cannot be written; create nothing.

    Args:
        paths: the files a run will write.
        overwrite: whether existing files may be replaced.
        option: what named the outputs (``--out``), for the messages.

    Raises:
        OutputPathError: If a file cannot be written (see
            :func:`~dspt_geo.outputs.check_output_path`).
        DsptGeoError: If a file exists (and not *overwrite*).

    .. versionadded:: 0.1
    """
    for path in paths:
        path = check_output_path(path, option)
        if path.exists() and not overwrite:
            msg = f'{option} {path} exists; pass overwrite (--overwrite) to replace it'
            raise DsptGeoError(msg)


class CogWriter:
    """Rows in, a Cloud-Optimized GeoTIFF out (see the module docstring).

    Use as a context manager: the COG is made when the block exits without an
    exception, else every temporary file is removed. :meth:`commit` does the same
    explicitly and lets the caller write sidecars just before the final rename.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        crs: CRS,
        transform: Affine,
        width: int,
        height: int,
        count: int = 1,
        dtype: str = 'uint8',
        nodata: float | None = 255,
        descriptions: Sequence[str] = (),
        colormap: Mapping[int, tuple[int, ...]] | None = None,
        scales: Sequence[float] | None = None,
        tags: Mapping[str, str] | None = None,
        overview_resampling: str = 'mode',
        compress: Compression = 'deflate',
        blocksize: int = 512,
    ) -> None:
        """Open the staging file.

        Args:
            path: the final GeoTIFF.
            crs: its CRS.
            transform: its geotransform.
            width: columns.
            height: rows.
            count: bands.
            dtype: numpy data type name.
            nodata: nodata value, or None.
            descriptions: one description per band.
            colormap: colour table of band 1 (value -> RGB or RGBA).
            scales: per-band scale (physical value = stored value * scale).
            tags: dataset metadata items.
            overview_resampling: GDAL resampling of the overviews.
            compress: ``'deflate'`` or ``'zstd'``.
            blocksize: tile side of the COG.
        """
        self.path = Path(path)
        self.width = width
        self.height = height
        self.overview_resampling = overview_resampling
        self.compress = compress
        self.blocksize = blocksize
        self._staging = temp_path(self.path.with_suffix('.tif'))
        self._final = temp_path(self.path)
        self._tiles = -(-width // blocksize) * -(-height // blocksize)
        profile: dict[str, Any] = {
            'width': width, 'height': height, 'count': count, 'dtype': dtype,
            'crs': crs, 'transform': transform, 'nodata': nodata,
        }  # fmt: skip
        #: mode overviews computed here rather than by GDAL (see :meth:`_source`).
        self._own_overviews = False
        #: the rows of a raster staged in memory, given to GDAL once at the end
        #: (one write per strip cost ~0.1 ms each, issue 16).
        self._data: npt.NDArray[Any] | None = None
        #: the folder in GDAL's memory file system of a raster with its own
        #: overviews.
        self._memory: MemoryFile | None = None
        if width * height <= _MEMORY_PIXELS:
            # A small raster is staged in memory: no striped file to write and
            # decode again (the 900 px sample's COG: 19.9 ms instead of 25.4 ms).
            # Zeros, as GDAL's MEM driver starts.
            self._data = np.zeros((count, height, width), dtype=dtype)
            sizes = cog_overview_sizes(width, height, blocksize)
            # GDAL's byte rule, which ours follows: nodata a byte value, or none.
            self._own_overviews = (
                overview_resampling == 'mode'
                and dtype == 'uint8'
                and (nodata is None or nodata in range(256))
                and bool(sizes)
                and all(w > 0 and h > 0 for w, h in sizes)
            )
            if self._own_overviews:
                # A GeoTIFF in memory, for the overviews to go beside it.
                self._memory = MemoryFile(
                    dirname=uuid.uuid4().hex, filename='staging.tif'
                )
                self._dst = rasterio.open(
                    self._memory.name, 'w', driver='GTiff', **profile
                )
            else:
                self._dst = rasterio.open(
                    self._staging.name, 'w', driver='MEM', **profile
                )
        else:
            self._dst = rasterio.open(
                self._staging,
                'w',
                driver='GTiff',
                tiled=False,
                blockysize=_STAGING_ROWS,
                compress='zstd',
                zstd_level=1,
                bigtiff='if_safer',
                **profile,
            )
        try:
            for band, description in enumerate(descriptions, start=1):
                self._dst.set_band_description(band, description)
            if colormap is not None:
                self._dst.write_colormap(1, dict(colormap))
            else:
                # Bands are measurements, not the red, green and blue of a picture.
                self._dst.colorinterp = [ColorInterp.gray] + [ColorInterp.undefined] * (
                    count - 1
                )
            if scales is not None:
                self._dst.scales = tuple(scales)
            if tags:
                self._dst.update_tags(**tags)
        except BaseException:
            self.abort()
            raise

    def write(self, row: int, data: npt.NDArray[Any]) -> None:
        """Write full-width rows starting at *row*.

        Args:
            row: first row.
            data: ``(count, rows, width)`` or ``(rows, width)`` array.
        """
        if data.ndim == 2:
            data = data[None]
        if self._data is not None:
            self._data[:, row : row + data.shape[1]] = data
        else:
            self._dst.write(data, window=Window(0, row, self.width, data.shape[1]))

    def commit(self, before_rename: Any = None) -> Path:
        """Make the COG and rename it to the final name.

        Args:
            before_rename: optional callable run after the COG is complete and just
                before it takes the final name (to write sidecars).

        Returns:
            the final path.
        """
        # With its overviews given, GDAL's workers only compress tiles, which pays
        # even for a few (the sample's class COG: 6.6-7.3 ms instead of 7.9 ms).
        few = self._tiles <= _ONE_THREAD_TILES and not self._own_overviews
        threads = 1 if few else 'ALL_CPUS'
        try:
            with self._source() as (source, overviews):
                rasterio.shutil.copy(
                    source,
                    self._final,
                    driver='COG',
                    COMPRESS=self.compress.upper(),
                    # Class rasters compress well at any level; level 1 keeps the
                    # final encode, which runs after inference, short.
                    LEVEL=1,
                    PREDICTOR='YES',
                    BLOCKSIZE=self.blocksize,
                    OVERVIEWS=overviews,
                    OVERVIEW_RESAMPLING=self.overview_resampling.upper(),
                    BIGTIFF='IF_SAFER',
                    NUM_THREADS=threads,
                )
            self._dst.close()
            _remove(self._staging)
            # Whatever GDAL kept aside (PAM) would be lost with the temporary name.
            self._final.with_name(self._final.name + '.aux.xml').unlink(missing_ok=True)
            if before_rename is not None:
                before_rename()
            os.replace(self._final, self.path)
        finally:
            self.abort()
        return self.path

    @contextmanager
    def _source(self) -> Iterator[tuple[Any, str]]:
        """What the COG driver converts, and its ``OVERVIEWS`` option.

        A raster in memory whose mode overviews are computed here is an
        uncompressed GeoTIFF in GDAL's memory file system; its overviews go beside
        it as external ``.ovr`` files (one per level, each the overview of the one
        before), which the driver copies as they are. Otherwise GDAL computes
        the overviews.
        """
        if self._data is None:
            self._dst.close()
            yield self._staging, 'IGNORE_EXISTING'
            return
        data = self._data
        self._dst.write(data)
        if not self._own_overviews:
            yield self._dst, 'IGNORE_EXISTING'
            return
        nodata = self._dst.nodata
        crs, transform = self._dst.crs, self._dst.transform
        self._dst.close()
        bands = [
            mode_overviews(
                band, self.blocksize, None if nodata is None else int(nodata)
            )
            for band in data
        ]
        assert self._memory is not None  # opened with _own_overviews
        path = self._memory.name
        for level in zip(*bands, strict=True):
            path += '.ovr'
            height, width = level[0].shape
            scale = Affine.scale(self.width / width, self.height / height)
            with rasterio.open(
                path, 'w', driver='GTiff', width=width, height=height,
                count=len(level), dtype='uint8', crs=crs,
                transform=transform * scale,
            ) as ovr:  # fmt: skip
                for band, values in enumerate(level, start=1):
                    ovr.write(values, band)
        with rasterio.open(self._memory.name) as staged:
            yield staged, 'FORCE_USE_EXISTING'

    def abort(self) -> None:
        """Close and remove the temporary files (a no-op after :meth:`commit`)."""
        if not self._dst.closed:
            self._dst.close()
        if self._memory is not None:
            self._memory.close()
        _remove(self._staging)
        _remove(self._final)

    def __enter__(self) -> Self:
        """Use as a context manager."""
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Commit on success, clean up on failure."""
        if kind is None:
            self.commit()
        else:
            self.abort()


def pam_xml(
    class_names: Sequence[str],
    class_colours: Sequence[tuple[int, int, int]],
    description: str = 'class',
) -> str:
    """GDAL PAM XML naming the classes of band 1: category names and an RAT.

    Args:
        class_names: name of value 0, 1, ...
        class_colours: RGB of value 0, 1, ...
        description: band description.

    Returns:
        the content of ``<raster>.aux.xml``.

    .. versionadded:: 0.1
    """
    # Field types and usages are GDAL's GDALRATFieldType / GDALRATFieldUsage codes.
    fields = [
        ('Value', 0, 5),  # integer, MinMax
        ('Class', 2, 2),  # string, Name
        ('Red', 0, 6),
        ('Green', 0, 7),
        ('Blue', 0, 8),
    ]
    lines = [
        '<PAMDataset>',
        '  <PAMRasterBand band="1">',
        f'    <Description>{escape(description)}</Description>',
        '    <CategoryNames>',
        *(f'      <Category>{escape(name)}</Category>' for name in class_names),
        '    </CategoryNames>',
        '    <GDALRasterAttributeTable tableType="thematic">',
    ]
    for index, (name, kind, usage) in enumerate(fields):
        lines += [
            f'      <FieldDefn index="{index}">',
            f'        <Name>{name}</Name>',
            f'        <Type>{kind}</Type>',
            f'        <Usage>{usage}</Usage>',
            '      </FieldDefn>',
        ]
    for value, (name, (red, green, blue)) in enumerate(
        zip(class_names, class_colours, strict=True)
    ):
        cells = (value, escape(name), red, green, blue)
        lines.append(
            f'      <Row index="{value}">'
            + ''.join(f'<F>{c}</F>' for c in cells)
            + '</Row>'
        )
    lines += [
        '    </GDALRasterAttributeTable>',
        '  </PAMRasterBand>',
        '</PAMDataset>',
        '',
    ]
    return '\n'.join(lines)


def write_detections(
    path: str | os.PathLike[str], frame: GeoDataFrame, *, layer: str = 'detections'
) -> Path:
    """Write detections atomically, in the format the extension names.

    A GeoPackage is version 1.3 (what QGIS 3.22's GDAL reads without a warning)
    with an R-tree spatial index; a FlatGeobuf file gets its packed R-tree; GeoJSON
    has none. Empty frames give an empty layer with the same fields.

    Args:
        path: ``.gpkg``, ``.geojson``/``.json`` or ``.fgb`` file.
        frame: polygons with their attributes and CRS.
        layer: layer name (GeoPackage).

    Returns:
        *path*.

    Raises:
        DsptGeoError: If the extension names no supported format.

    .. versionadded:: 0.1
    """
    path = Path(path)
    driver = VECTOR_DRIVERS.get(path.suffix.lower())
    if driver is None:
        msg = (
            f'cannot tell the vector format of {path}; use one of '
            f'{", ".join(VECTOR_DRIVERS)}'
        )
        raise DsptGeoError(msg)
    options: dict[str, Any] = {}
    match driver:
        case 'GPKG':
            options = {
                'layer': layer,
                'dataset_options': {'VERSION': '1.3'},
                'layer_options': {'SPATIAL_INDEX': 'YES'},
            }
        case 'FlatGeobuf':
            options = {'layer_options': {'SPATIAL_INDEX': 'YES'}}
    with atomic_path(path) as temp:
        pyogrio.write_dataframe(
            frame, temp, driver=driver, geometry_type='Polygon', **options
        )
    return path
