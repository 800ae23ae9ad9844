"""Sensor groups: rasters that share one band layout.

A model's patch-embedding stem expects a fixed number and meaning of bands, so the
rasters of a run are grouped by band layout (band count, data type, band names where
the files carry them). Sentinel-2 tiles and Sentinel-1 VV/VH pairs in one folder give
two groups. Inside a group files may differ in CRS and resolution: like torchgeo, a
group samples in one CRS and resolution, here chosen as the CRS that holds most of
the group's pixels and the median pixel size of the files native to it, unless the
caller sets them.

Image chips (rasters without georeferencing) are grouped by band layout the same
way. Chips of a layout that georeferenced rasters also have join that sensor group
(``SensorGroup.chips``): one band layout is one group, with one stem and one set of
statistics, whatever form its files take (issue 11). Chips of a layout no raster has
form a :class:`ChipGroup`, which has no CRS or resolution. Either way every chip is a
sample space of its own, and groups are named by layout alone, so that fine-tuning on
chips finds the pre-trained stem by name.
"""

import logging
import os
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from rasterio.crs import CRS
from rasterio.warp import calculate_default_transform

from .discovery import ChipFile, RasterFile, ScanResult, scan_rasters
from .sar import SarScale, detect_sar_scale

__all__ = (
    'ChipGroup',
    'SensorGroup',
    'discover_groups',
    'group_chips',
    'group_rasters',
    'group_scan',
    'layout_name',
)

logger = logging.getLogger(__name__)


class _BandLayout:
    """What a group's band layout tells: band names, complex data, SAR.

    Shared by :class:`SensorGroup` and :class:`ChipGroup`, which define the fields.
    """

    count: int
    dtype: str
    band_names: tuple[str, ...]
    sar_scale: SarScale | None

    @property
    def bands(self) -> tuple[str, ...]:
        """Band names, ``band_1``, ``band_2``, ... where the files name none."""
        return self.band_names or tuple(f'band_{i + 1}' for i in range(self.count))

    @property
    def is_complex(self) -> bool:
        """Whether the samples are complex SAR, converted to backscatter on reading."""
        return np.dtype(self.dtype).kind == 'c'

    @property
    def is_sar(self) -> bool:
        """Whether the group is SAR backscatter, converted by ``--sar-mode``."""
        return self.sar_scale is not None


@dataclass(frozen=True)
class SensorGroup(_BandLayout):
    """Rasters of one band layout, sampled in one CRS and resolution.

    Image chips of the same layout, if any, belong to the group too (*chips*):
    they share its stem and statistics, and are sampled as chips, each on its own.

    Attributes:
        name: short stable name, e.g. ``'12band-uint16-B01-to-B12'``.
        rasters: the group's rasters, sorted by path.
        count: number of bands.
        dtype: numpy name of the stored data type.
        band_names: names the files give their bands, or empty when they give none.
        crs: CRS that samples are served in.
        res: pixel size (x, y) that samples are served at, in *crs* units.
        nodata: value marking missing pixels, or None.
        sar_scale: how a SAR group stores backscatter (``'complex'``,
            ``'intensity'``, ``'amplitude'``, ``'db'``), None when it is not SAR.
        chips: image chips of the same band layout, sorted by path.

    .. versionchanged:: 0.2
       Added *sar_scale* and *chips*.
    """

    name: str
    rasters: tuple[RasterFile, ...]
    count: int
    dtype: str
    band_names: tuple[str, ...]
    crs: CRS
    res: tuple[float, float]
    nodata: float | None
    sar_scale: SarScale | None = None
    chips: tuple[ChipFile, ...] = ()

    @property
    def raster_pixels(self) -> int:
        """Pixels of the group's georeferenced rasters."""
        return sum(r.width * r.height for r in self.rasters)

    @property
    def chip_pixels(self) -> int:
        """Pixels of the group's image chips."""
        return sum(c.width * c.height for c in self.chips)

    @property
    def pixels(self) -> int:
        """Pixels of all the group's rasters and chips."""
        return self.raster_pixels + self.chip_pixels

    @property
    def paths(self) -> tuple[str, ...]:
        """Every file the group reads."""
        return (
            *(path for raster in self.rasters for path in raster.paths),
            *(chip.path for chip in self.chips),
        )


@dataclass(frozen=True)
class ChipGroup(_BandLayout):
    """Image chips of one band layout; each chip is a sample space of its own.

    Attributes:
        name: short stable name, e.g. ``'3band-uint8'``.
        chips: the group's chips, sorted by path.
        count: number of bands.
        dtype: numpy name of the stored data type.
        band_names: names the files give their bands, or empty when they give none.
        nodata: value marking missing pixels, or None.
        sar_scale: how SAR chips store backscatter, None when they are not SAR
            (the rule of :func:`~dspt_geo.data.sar.detect_sar_scale`).

    .. versionadded:: 0.2
    """

    name: str
    chips: tuple[ChipFile, ...]
    count: int
    dtype: str
    band_names: tuple[str, ...]
    nodata: float | None
    sar_scale: SarScale | None = None

    @property
    def pixels(self) -> int:
        """Pixels of all the group's chips."""
        return sum(c.width * c.height for c in self.chips)

    @property
    def paths(self) -> tuple[str, ...]:
        """Every file the group reads."""
        return tuple(chip.path for chip in self.chips)


def discover_groups(
    paths: Sequence[str | os.PathLike[str]],
    *,
    crs: str | None = None,
    res: float | None = None,
    nodata: float | None = None,
) -> list[SensorGroup | ChipGroup]:
    """Scan *paths* and group the rasters, and the image chips, by band layout.

    Args:
        paths: folders (searched recursively) and files.
        crs: CRS override for every group of georeferenced rasters.
        res: resolution override for every group of georeferenced rasters.
        nodata: nodata override for every file.

    Returns:
        the groups of :func:`group_scan`.

    Raises:
        NoRastersFoundError: If nothing usable is found.

    .. versionchanged:: 0.2
       Image chips are accepted (moved here from the pre-training DataModule).
    """
    return group_scan(scan_rasters(paths, chips=True), crs=crs, res=res, nodata=nodata)


def group_scan(
    scan: ScanResult,
    *,
    crs: CRS | str | None = None,
    res: float | None = None,
    nodata: float | None = None,
) -> list[SensorGroup | ChipGroup]:
    """Group what a scan found: one group per band layout.

    Chips of a layout that georeferenced rasters have join that sensor group
    (:attr:`SensorGroup.chips`); the others form chip groups.

    Args:
        scan: rasters and chips from :func:`~dspt_geo.data.scan_rasters`.
        crs: CRS override for every group of georeferenced rasters.
        res: resolution override for every group of georeferenced rasters.
        nodata: nodata override for every file.

    Returns:
        the sensor groups (with any chips of their layout), then the chip groups.

    .. versionadded:: 0.2
    """
    groups: list[SensorGroup | ChipGroup] = []
    if scan.rasters:
        groups.extend(group_rasters(scan.rasters, crs=crs, res=res, nodata=nodata))
    by_name = {group.name: i for i, group in enumerate(groups)}
    for chip_group in group_chips(scan.chips, nodata=nodata):
        if chip_group.name not in by_name:
            groups.append(chip_group)
            continue
        # Same layout as georeferenced rasters (group_rasters names the first
        # group of a layout by the layout alone): one group, one stem.
        i = by_name[chip_group.name]
        groups[i] = replace(groups[i], chips=chip_group.chips)
        logger.debug(
            'group %s: %d image chips join its rasters',
            chip_group.name,
            len(chip_group.chips),
        )
    return groups


def group_chips(
    chips: Iterable[ChipFile], *, nodata: float | None = None
) -> list[ChipGroup]:
    """Group image chips by band layout.

    Args:
        chips: chips from :func:`~dspt_geo.data.scan_rasters`.
        nodata: nodata value overriding what the files declare.

    Returns:
        groups named by :func:`layout_name`, the one holding most pixels first.

    .. versionadded:: 0.2
    """
    layouts: dict[tuple[int, str, tuple[str, ...]], list[ChipFile]] = defaultdict(list)
    for chip in chips:
        layouts[(chip.count, chip.dtype, chip.band_names)].append(chip)
    groups = []
    for (count, dtype, band_names), members in sorted(layouts.items()):
        declared = Counter(c.nodata for c in members if c.nodata is not None)
        group_nodata = (
            nodata
            if nodata is not None
            else (declared.most_common(1)[0][0] if declared else None)
        )
        members = sorted(members, key=lambda c: c.path)
        groups.append(
            ChipGroup(
                name=layout_name(count, dtype, band_names),
                chips=tuple(members),
                count=count,
                dtype=dtype,
                band_names=band_names,
                nodata=group_nodata,
                sar_scale=detect_sar_scale(
                    dtype, band_names, [c.path for c in members], group_nodata
                ),
            )
        )
    groups.sort(key=lambda g: (-g.pixels, g.name))
    return groups


def group_rasters(
    rasters: Iterable[RasterFile],
    *,
    crs: CRS | str | None = None,
    res: float | tuple[float, float] | None = None,
    nodata: float | None = None,
) -> list[SensorGroup]:
    """Group rasters by band layout.

    Args:
        rasters: rasters from :func:`~dspt_geo.data.scan_rasters`.
        crs: CRS for every group (default: per group, the CRS holding most pixels).
        res: resolution for every group, in *crs* units (default: per group, the
            median resolution of its files native to the group's CRS).
        nodata: nodata value overriding what the files declare.

    Returns:
        groups, the one holding most pixels first.
    """
    # One-band-per-file items read differently from stacked files of the same
    # layout, so they form a group of their own.
    layouts: dict[tuple[int, str, tuple[str, ...], bool], list[RasterFile]] = (
        defaultdict(list)
    )
    for raster in rasters:
        key = (raster.count, raster.dtype, raster.band_names, raster.separate_files)
        layouts[key].append(raster)

    target_crs = CRS.from_user_input(crs) if crs is not None else None
    groups = []
    names: Counter[str] = Counter()
    for (count, dtype, band_names, _), members in sorted(layouts.items()):
        members = sorted(members, key=lambda r: r.path)
        group_crs = target_crs or _majority_crs(members)
        name = layout_name(count, dtype, band_names)
        names[name] += 1
        group_nodata = nodata if nodata is not None else _common_nodata(members)
        groups.append(
            SensorGroup(
                name=name if names[name] == 1 else f'{name}-{names[name]}',
                rasters=tuple(members),
                count=count,
                dtype=dtype,
                band_names=band_names,
                crs=group_crs,
                res=_to_pair(res)
                if res is not None
                else _median_res(members, group_crs),
                nodata=group_nodata,
                sar_scale=detect_sar_scale(
                    dtype,
                    band_names,
                    [path for member in members for path in member.paths],
                    group_nodata,
                ),
            )
        )
    groups.sort(key=lambda g: (-g.raster_pixels, g.name))
    return groups


def layout_name(count: int, dtype: str, band_names: tuple[str, ...]) -> str:
    """A readable name unique per band layout, usable as a module key.

    Sensor groups are named so; so are the chips of fine-tuning data, so that
    a pre-trained stem is found by name for chips of the same layout.

    Args:
        count: number of bands.
        dtype: numpy name of the stored data type.
        band_names: names the files give their bands, or empty.

    Returns:
        e.g. ``'4band-uint16-blue-green-red-nir'`` or ``'12band-uint16-B01-to-B12'``.
    """
    name = f'{count}band-{dtype}'
    if band_names:
        shown = band_names if count <= 4 else (band_names[0], 'to', band_names[-1])
        name += '-' + '-'.join(shown)
    return re.sub(r'[^A-Za-z0-9_-]+', '_', name)


def _to_pair(res: float | tuple[float, float]) -> tuple[float, float]:
    """Normalise a resolution to an (x, y) pair."""
    if isinstance(res, int | float):
        return (float(res), float(res))
    return (float(res[0]), float(res[1]))


def _majority_crs(rasters: list[RasterFile]) -> CRS:
    """The CRS holding most pixels (ties: the first file's)."""
    pixels: Counter[str] = Counter()
    by_wkt: dict[str, CRS] = {}
    for raster in rasters:
        wkt = raster.crs.to_wkt()
        by_wkt.setdefault(wkt, raster.crs)
        pixels[wkt] += raster.width * raster.height
    return by_wkt[pixels.most_common(1)[0][0]]


def _median_res(rasters: list[RasterFile], crs: CRS) -> tuple[float, float]:
    """Median pixel size of the rasters native to *crs* (else of all, warped)."""
    native = [r.res for r in rasters if r.crs == crs]
    if not native:
        native = []
        for raster in rasters:
            transform, _, _ = calculate_default_transform(
                raster.crs, crs, raster.width, raster.height, *raster.bounds
            )
            native.append((abs(transform.a), abs(transform.e)))
    return (
        statistics.median(x for x, _ in native),
        statistics.median(y for _, y in native),
    )


def _common_nodata(rasters: list[RasterFile]) -> float | None:
    """The nodata value most files declare, warning when they disagree."""
    declared = Counter(r.nodata for r in rasters if r.nodata is not None)
    if not declared:
        return None
    value = declared.most_common(1)[0][0]
    if len(declared) > 1:
        logger.warning(
            'files of one band layout declare different nodata values %s; using %s '
            '(set --nodata to choose)',
            sorted(declared),
            value,
        )
    return value
