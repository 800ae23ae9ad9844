"""Finding georeferenced rasters and image chips in the folders users point at.

Folders are searched recursively. Every file GDAL opens as a georeferenced raster
becomes a :class:`RasterFile`; files stored one band per file (Sentinel-2's
``*_B02.tif``, SAR's ``*_VV.tif``) are joined into one multi-band item. Where the
caller accepts chips, a raster without georeferencing (a JPEG, PNG or TIFF without
a CRS, the form of most scene-classification sets) becomes a :class:`ChipFile`, a
sample space of its own (issue 11). A file that cannot serve (corrupt, no CRS where
chips are not accepted, only ground control points, no valid pixel) becomes a
:class:`SkippedFile` with the reason and what to do; skipped files are logged as
one warning per reason, each file at info level (issue 9).
"""

import logging
import os
import re
import warnings
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.vrt import WarpedVRT

from ..errors import NoRastersFoundError

__all__ = (
    'ChipFile',
    'RasterFile',
    'ScanResult',
    'SkippedFile',
    'has_alpha',
    'north_up',
    'report_skipped',
    'scan_rasters',
)

logger = logging.getLogger(__name__)

#: Extensions of raster formats: a file with one of these that GDAL cannot open is
#: reported as unreadable. Other files are tried too, and ignored quietly when GDAL
#: does not recognise them.
RASTER_EXTENSIONS = frozenset({
    '.tif', '.tiff', '.gtif', '.jp2', '.j2k', '.img', '.vrt', '.hgt', '.dem', '.nc',
    '.hdf', '.h5', '.kea', '.bil', '.bsq', '.bip', '.ers', '.rst', '.sdat', '.grd',
    '.asc', '.png', '.jpg', '.jpeg',
})  # fmt: skip

#: Sidecars, vectors and documents that sit beside rasters and are never opened.
IGNORED_EXTENSIONS = frozenset({
    '.xml', '.aux', '.ovr', '.msk', '.json', '.geojson', '.gpkg', '.shp', '.shx',
    '.dbf', '.prj', '.cpg', '.qml', '.qgz', '.qgs', '.txt', '.md', '.csv', '.zip',
    '.tfw', '.wld', '.pdf', '.html', '.py', '.yaml', '.yml', '.log', '.pt', '.pth',
    '.ckpt', '.safetensors', '.fgb', '.parquet',
})  # fmt: skip

#: A band token at the end of a file name: ``..._B02``, ``..._B8A``, ``..._vv``.
BAND_FILE_PATTERN = re.compile(
    r'^(?P<stem>.+?)[_.-](?P<band>B\d{1,2}A?|VV|VH|HH|HV)$', re.IGNORECASE
)

#: Order of polarisation bands, after Sentinel-1's habit of VV before VH.
_POLARISATION_ORDER = ('VV', 'VH', 'HH', 'HV')

#: Drivers that can write a CRS into an existing file, so ``gdal_edit.py`` works on
#: it; other formats (JPEG, PNG, ...) need a copy (``gdal_translate``).
_UPDATABLE_DRIVERS = frozenset({
    'GTiff', 'COG', 'HFA', 'ENVI', 'EHdr', 'KEA', 'PCIDSK', 'netCDF', 'VRT', 'SAGA',
    'ERS', 'RST', 'ISIS3', 'PDS4', 'NITF',
})  # fmt: skip

#: Skipped files named per reason in the warning; ``-v`` lists all.
_SKIPPED_SHOWN = 3

#: Files up to this many pixels, or with overviews, are checked for valid pixels while
#: scanning; larger ones are checked by the samplers as they read them.
_VALIDITY_CHECK_MAX_PIXELS = 4096 * 4096


@dataclass(frozen=True)
class RasterFile:
    """One raster item: a multi-band file, or single-band files joined by name.

    Attributes:
        path: the file, or the first band's file when bands are separate files.
        band_paths: one path per band when bands are separate files, else empty.
        count: number of bands.
        dtype: numpy name of the stored data type (``'complex64'`` for SLC SAR).
        band_names: band names from the file (descriptions or file names), or empty.
        crs: coordinate reference system.
        res: pixel size (x, y) in CRS units.
        bounds: (left, bottom, right, top) in CRS units.
        width: columns.
        height: rows.
        nodata: nodata value, or None when the file declares none.
        north_up: whether every file's grid is north-up (rotated grids are read
            through a warp).
    """

    path: str
    band_paths: tuple[str, ...]
    count: int
    dtype: str
    band_names: tuple[str, ...]
    crs: CRS
    res: tuple[float, float]
    bounds: tuple[float, float, float, float]
    width: int
    height: int
    nodata: float | None
    north_up: bool = True

    @property
    def separate_files(self) -> bool:
        """Whether each band is stored in its own file."""
        return bool(self.band_paths)

    @property
    def is_complex(self) -> bool:
        """Whether the samples are complex (SAR phase and amplitude)."""
        return np.dtype(self.dtype).kind == 'c'

    @property
    def paths(self) -> tuple[str, ...]:
        """Every file this item reads."""
        return self.band_paths or (self.path,)


@dataclass(frozen=True)
class ChipFile:
    """One image chip: a raster without georeferencing, a sample space of its own.

    Chips are never placed on a map or mosaicked with one another; samples are the
    whole chip or windows of it.

    Attributes:
        path: the file.
        count: number of image bands (an alpha band not counted).
        dtype: numpy name of the stored data type.
        band_names: band names from the file (descriptions), or empty.
        width: columns.
        height: rows.
        nodata: nodata value, or None when the file declares none.
        alpha: whether the last stored band is transparency (0: no data).
        driver: GDAL driver name (``'JPEG'``, ``'PNG'``, ``'GTiff'``, ...).
    """

    path: str
    count: int
    dtype: str
    band_names: tuple[str, ...]
    width: int
    height: int
    nodata: float | None
    alpha: bool
    driver: str

    @property
    def is_complex(self) -> bool:
        """Whether the samples are complex (SAR phase and amplitude)."""
        return np.dtype(self.dtype).kind == 'c'

    @property
    def paths(self) -> tuple[str, ...]:
        """Every file this item reads."""
        return (self.path,)


@dataclass(frozen=True)
class SkippedFile:
    """A file that was found but cannot serve, and why.

    Attributes:
        path: the file, as the user's path spells it (links not resolved).
        reason: why, and what to do; the same text for every file skipped alike.
        detail: what is particular to this file (e.g. GDAL's error), or empty.
    """

    path: str
    reason: str
    detail: str = ''


@dataclass
class ScanResult:
    """What a scan found: usable rasters, image chips and skipped files."""

    rasters: list[RasterFile] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    chips: list[ChipFile] = field(default_factory=list)


def scan_rasters(
    paths: Iterable[str | os.PathLike[str]],
    *,
    check_valid: bool = True,
    chips: bool = False,
    report: bool = True,
) -> ScanResult:
    """Find every georeferenced raster (and, if asked, image chip) under *paths*.

    Args:
        paths: folders (searched recursively) and files.
        check_valid: look for at least one valid pixel in files small enough, or
            with overviews, to check cheaply.
        chips: accept rasters without georeferencing as image chips (else they
            are skipped, with a hint how to georeference them).
        report: log the skipped files (:func:`report_skipped`); False for callers
            that may read the files another way (image chips), and report what
            they really skip themselves.

    Returns:
        the usable rasters and chips, sorted by path, and the skipped files.

    Raises:
        NoRastersFoundError: If a path does not exist or nothing usable is found.

    .. versionchanged:: 0.2
       Added *chips* and *report*.
    """
    folders = [Path(p) for p in paths]
    missing = [str(p) for p in folders if not p.exists()]
    if missing:
        msg = f'no such file or folder: {", ".join(missing)}'
        raise NoRastersFoundError(msg)

    result = ScanResult()
    candidates = _candidate_files(folders)
    given = {os.path.abspath(path): str(path) for path in candidates}
    singles, band_sets = _split_band_files(candidates)
    for path in singles:
        _add(result, _read_single(path, chips=chips))
    for stem_key, band_files in sorted(band_sets.items()):
        _add(result, _read_band_set(stem_key, band_files))

    if check_valid:
        for raster in list(result.rasters):
            reason = _validity_problem(raster)
            if reason:
                result.rasters.remove(raster)
                _add(result, SkippedFile(given.get(raster.path, raster.path), reason))

    result.rasters.sort(key=lambda r: r.path)
    result.chips.sort(key=lambda c: c.path)
    if report:
        report_skipped(result.skipped)
    if not result.rasters and not result.chips:
        where = ', '.join(str(p) for p in folders)
        found = (
            'georeferenced raster or image chip' if chips else 'georeferenced raster'
        )
        msg = f'no usable {found} found in {where}'
        if result.skipped:
            msg += f' ({len(result.skipped)} file(s) skipped; first: '
            msg += f'{result.skipped[0].path}: {result.skipped[0].reason})'
        elif chips:
            msg += '; point at folders of image chips or GeoTIFFs (or other rasters GDAL reads)'
        else:
            msg += '; point at folders of GeoTIFFs (or other rasters GDAL reads)'
        raise NoRastersFoundError(msg)
    return result


def report_skipped(skipped: Iterable[SkippedFile]) -> None:
    """Warn once per reason, naming a few files; every file at info level (``-v``).

    Args:
        skipped: the skipped files.
    """
    by_reason: dict[str, list[SkippedFile]] = defaultdict(list)
    for item in skipped:
        by_reason[item.reason].append(item)
    for reason, items in by_reason.items():
        shown = ', '.join(item.path for item in items[:_SKIPPED_SHOWN])
        more = len(items) - _SKIPPED_SHOWN
        if more > 0:
            shown += f' and {more} more (-v lists all)'
        files = 'file' if len(items) == 1 else 'files'
        logger.warning('skipping %d %s (%s): %s', len(items), files, shown, reason)
        for item in items:
            detail = f' ({item.detail})' if item.detail else ''
            logger.info('skipped %s: %s%s', item.path, reason, detail)


def _add(result: ScanResult, item: RasterFile | ChipFile | SkippedFile | None) -> None:
    """Record a scanned item."""
    match item:
        case RasterFile():
            result.rasters.append(item)
        case ChipFile():
            result.chips.append(item)
        case SkippedFile():
            result.skipped.append(item)


def _candidate_files(paths: Iterable[Path]) -> list[Path]:
    """Files under *paths* worth opening, skipping hidden ones and sidecars.

    Paths keep the user's spelling (links are not resolved, so that messages name
    what the user typed); a file reached twice is listed once.

    Returns:
        the files, sorted.
    """
    found: dict[str, Path] = {}
    for path in paths:
        if path.is_file():
            found.setdefault(os.path.abspath(path), path)
            continue
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
            for name in files:
                if name.startswith('.') or _extension(name) in IGNORED_EXTENSIONS:
                    continue
                file = Path(root) / name
                found.setdefault(os.path.abspath(file), file)
    return sorted(found.values())


def _extension(name: str) -> str:
    """Lower-case last extension of a file name (``.aux.xml`` gives ``.xml``)."""
    return os.path.splitext(name)[1].lower()


def _split_band_files(
    files: list[Path],
) -> tuple[list[Path], dict[tuple[str, str, str], dict[str, Path]]]:
    """Separate stand-alone files from sets of one-band-per-file siblings.

    Returns:
        files that stand alone, and band sets keyed by (folder, stem, extension)
        holding band name -> file. A lone ``*_B02.tif`` stands alone.
    """
    sets: dict[tuple[str, str, str], dict[str, Path]] = defaultdict(dict)
    for path in files:
        stem, ext = os.path.splitext(path.name)
        match = BAND_FILE_PATTERN.match(stem)
        if match:
            key = (str(path.parent), match['stem'], ext.lower())
            sets[key][match['band']] = path
    band_sets = {key: bands for key, bands in sets.items() if len(bands) > 1}
    in_sets = {p for bands in band_sets.values() for p in bands.values()}
    return [p for p in files if p not in in_sets], band_sets


def _band_order(band: str) -> tuple[int, float]:
    """Sort key putting B01 < B02 < ... < B08 < B8A < B09 and VV < VH < HH < HV."""
    upper = band.upper()
    if upper in _POLARISATION_ORDER:
        return (1, _POLARISATION_ORDER.index(upper))
    number = upper[1:].rstrip('A')
    return (0, int(number) + (0.5 if upper.endswith('A') else 0))


def north_up(transform: Affine) -> bool:
    """Whether a geotransform has no rotation or shear (rows run south)."""
    return transform.b == 0 and transform.d == 0 and transform.e < 0 < transform.a


def has_alpha(src: rasterio.io.DatasetReader) -> bool:
    """Whether the last band of a chip is transparency (PNG, WebP, GIF RGBA or LA).

    GeoTIFF bands are all data: 4-band RGBN GeoTIFFs often flag their near-infrared
    band as alpha (TIFF ExtraSamples), as the NAIP patches of the sample data do.
    """
    return (
        src.driver != 'GTiff'
        and src.count in (2, 4)
        and src.colorinterp[-1] == ColorInterp.alpha
    )


def _georeferencing_problem(src: rasterio.io.DatasetReader) -> str | None:
    """Why *src* cannot be placed on a map, or None."""
    if src.crs is None:
        gcps, _ = src.gcps
        if gcps:
            return (
                'has only ground control points, no map projection; warp it first, '
                'e.g. `gdalwarp -t_srs EPSG:XXXX in.tif out.tif`'
            )
        return f'has no CRS; {_georeferencing_hint(src.driver)}'
    if src.transform.is_identity:
        return 'has no geotransform; georeference it before use'
    return None


def _georeferencing_hint(driver: str) -> str:
    """How to give a file of *driver*'s format a CRS (issue 9: the hint must work)."""
    if driver in _UPDATABLE_DRIVERS:
        return 'assign one, e.g. `gdal_edit.py -a_srs EPSG:XXXX file`'
    return (
        f'{driver} files cannot be updated in place: write a georeferenced copy, '
        'e.g. `gdal_translate -a_srs EPSG:XXXX -a_ullr ULX ULY LRX LRY in out.tif`'
    )


def _band_names(src: rasterio.io.DatasetReader, count: int) -> tuple[str, ...]:
    """The first *count* band descriptions when all are given and distinct, else ()."""
    names = tuple(d or '' for d in src.descriptions[:count])
    if not all(names) or len(set(names)) != len(names):
        return ()
    return names


def _chip(path: Path, src: rasterio.io.DatasetReader) -> ChipFile:
    """Describe a raster without georeferencing as an image chip."""
    alpha = has_alpha(src)
    count = src.count - alpha
    return ChipFile(
        path=os.path.abspath(path),
        count=count,
        dtype=src.dtypes[0],
        band_names=_band_names(src, count),
        width=src.width,
        height=src.height,
        nodata=src.nodata,
        alpha=alpha,
        driver=src.driver,
    )


def _read_single(
    path: Path, *, chips: bool = False
) -> RasterFile | ChipFile | SkippedFile | None:
    """Describe one file; None when it is not a raster at all."""
    try:
        with warnings.catch_warnings():
            # A missing georeference is reported as a skip reason, not a warning.
            warnings.simplefilter('ignore', NotGeoreferencedWarning)
            src = rasterio.open(path)
        with src:
            if len(set(src.dtypes)) > 1:
                return SkippedFile(
                    str(path), f'mixes band data types {sorted(set(src.dtypes))}'
                )
            problem = _georeferencing_problem(src)
            if problem and chips and not src.gcps[0]:
                return _chip(path, src)
            if problem:
                return SkippedFile(str(path), problem)
            names = _band_names(src, src.count)
            # A rotated grid is described by its north-up envelope, as torchgeo
            # indexes it; reading it takes the warped path.
            grid = src if north_up(src.transform) else WarpedVRT(src, crs=src.crs)
            return RasterFile(
                path=os.path.abspath(path),
                band_paths=(),
                count=src.count,
                dtype=src.dtypes[0],
                band_names=names,
                crs=src.crs,
                res=(abs(grid.res[0]), abs(grid.res[1])),
                bounds=tuple(grid.bounds),
                width=grid.width,
                height=grid.height,
                nodata=src.nodata,
                north_up=grid is src,
            )
    except RasterioIOError as error:
        if _extension(path.name) in RASTER_EXTENSIONS:
            reason = 'GDAL cannot open it; the file may be corrupt or cut off'
            return SkippedFile(str(path), reason, detail=str(error))
        logger.debug('ignoring %s: not a raster (%s)', path, error)
        return None


def _read_band_set(
    key: tuple[str, str, str], band_files: dict[str, Path]
) -> RasterFile | SkippedFile:
    """Describe a set of one-band files as one multi-band item.

    The finest band sets the item's grid; all bands must share a CRS and data type.
    """
    folder, stem, ext = key
    name = os.path.join(folder, f'{stem}_{{{",".join(sorted(band_files))}}}{ext}')
    bands = sorted(band_files, key=_band_order)
    described: list[RasterFile] = []
    for band in bands:
        item = _read_single(band_files[band])
        if not isinstance(item, RasterFile):
            reason = item.reason if isinstance(item, SkippedFile) else 'cannot be read'
            return SkippedFile(name, f'band {band} ({band_files[band].name}) {reason}')
        if item.count != 1:
            return SkippedFile(name, f'band file {item.path} holds {item.count} bands')
        described.append(item)
    if len({r.crs for r in described}) > 1 or len({r.dtype for r in described}) > 1:
        return SkippedFile(name, 'its band files differ in CRS or data type')
    finest = min(described, key=lambda r: r.res[0] * r.res[1])
    return RasterFile(
        path=finest.path,
        band_paths=tuple(r.path for r in described),
        count=len(described),
        dtype=finest.dtype,
        band_names=tuple(b.upper() for b in bands),
        crs=finest.crs,
        res=finest.res,
        bounds=finest.bounds,
        width=finest.width,
        height=finest.height,
        nodata=finest.nodata,
        north_up=all(r.north_up for r in described),
    )


def _validity_problem(raster: RasterFile) -> str | None:
    """Say so when a cheaply checkable raster holds no valid pixel."""
    with rasterio.open(raster.path) as src:
        cheap = src.overviews(1) or src.width * src.height <= _VALIDITY_CHECK_MAX_PIXELS
        if not cheap:
            return None
        shape = (min(src.height, 512), min(src.width, 512))
        data = src.read(1, out_shape=shape)
    if raster.is_complex:
        valid = np.abs(data) > 0
    else:
        valid = (
            np.isfinite(data) if data.dtype.kind == 'f' else np.ones_like(data, bool)
        )
        if raster.nodata is not None:
            valid &= data != raster.nodata
    if valid.any():
        return None
    return 'holds no valid pixel (every value is nodata); remove it or fix its nodata'
