"""What the tool sees in a set of raster and chip folders, as data and as text."""

import os
from collections.abc import Iterable
from typing import Any

import shapely
from rasterio.crs import CRS
from rasterio.warp import transform_geom

from .batches import group_dataset
from .chips import ChipDataset
from .dataset import SensorDataset
from .discovery import ChipFile, scan_rasters
from .groups import ChipGroup, SensorGroup, group_scan
from .sar import SarMode
from .statistics import load_or_compute_statistics

__all__ = ('describe_rasters', 'format_description')

#: Chips listed per chip group, and skipped files per reason, in the text form
#: (the JSON lists all).
_CHIPS_SHOWN = 5

#: Equal-area CRS (World Cylindrical Equal Area) used to report footprints in km^2.
_EQUAL_AREA = CRS.from_epsg(6933)


def describe_rasters(
    paths: Iterable[str | os.PathLike[str]],
    *,
    crs: CRS | str | None = None,
    res: float | None = None,
    nodata: float | None = None,
    sar_mode: SarMode = 'auto',
    stats: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Describe the sensor groups and chip groups found under *paths*.

    Args:
        paths: folders and files, as for :func:`~dspt_geo.data.scan_rasters`.
        crs: CRS override for every group.
        res: resolution override for every group.
        nodata: nodata override for every file.
        sar_mode: backscatter scale of SAR groups (affects statistics).
        stats: also estimate per-band normalisation statistics.
        cache_dir: statistics cache folder.

    Returns:
        a JSON-ready dict: ``groups`` (one entry per sensor group; ``chips`` holds
        the image chips of its layout, or None), ``chip_groups`` (one per band
        layout of image chips that no raster has) and ``skipped``; a SAR group's
        ``sar`` holds the stored scale and the conversion decided (``sar_scale``,
        ``sar_mode``, ``conversion``), else it is None. Statistics cover a
        group's rasters and chips together.

    .. versionchanged:: 0.2
       Image chips are described as ``chip_groups``, or in ``chips`` of the
       sensor group of their layout.
    """
    scan = scan_rasters(paths, chips=True)
    found = group_scan(scan, crs=crs, res=res, nodata=nodata)
    groups = [g for g in found if isinstance(g, SensorGroup)]
    chip_groups = [g for g in found if isinstance(g, ChipGroup)]
    described = []
    for group in groups:
        dataset = SensorDataset(group, sar_mode=sar_mode)
        footprint = shapely.union_all(list(dataset.index.geometry))
        left, bottom, right, top = footprint.bounds
        area = shapely.geometry.shape(
            transform_geom(group.crs, _EQUAL_AREA, shapely.geometry.mapping(footprint))
        ).area
        entry: dict[str, Any] = {
            **_describe_layout(group, dataset),
            'crs': _crs_name(group.crs),
            'res': list(group.res),
            'extent': [left, bottom, right, top],
            'area_km2': area / 1e6,
            'pixels': group.raster_pixels,
            'files': [
                {
                    'path': raster.path,
                    'bands_in_files': list(raster.band_paths),
                    'crs': _crs_name(raster.crs),
                    'res': list(raster.res),
                    'size': [raster.width, raster.height],
                    'nodata': raster.nodata,
                }
                for raster in group.rasters
            ],
            'chips': _describe_chip_files(group.chips) if group.chips else None,
        }
        if stats:
            entry['statistics'] = load_or_compute_statistics(
                group_dataset(group, sar_mode), cache_dir
            ).to_dict()
        described.append(entry)
    skipped = [{'path': s.path, 'reason': s.reason} for s in scan.skipped]
    return {
        'groups': described,
        'chip_groups': [
            _describe_chips(group, sar_mode, stats, cache_dir) for group in chip_groups
        ],
        'skipped': skipped,
    }


def _describe_chips(
    group: ChipGroup,
    sar_mode: SarMode,
    stats: bool,
    cache_dir: str | os.PathLike[str] | None,
) -> dict[str, Any]:
    """JSON-ready description of a chip group."""
    dataset = ChipDataset(group, sar_mode=sar_mode)
    entry: dict[str, Any] = {
        **_describe_layout(group, dataset),
        **_describe_chip_files(group.chips),
    }
    if stats:
        entry['statistics'] = load_or_compute_statistics(dataset, cache_dir).to_dict()
    return entry


def _describe_layout(
    group: SensorGroup | ChipGroup, dataset: SensorDataset | ChipDataset
) -> dict[str, Any]:
    """JSON-ready name, bands, data type, SAR conversion and nodata of a group."""
    return {
        'name': group.name,
        'bands': list(group.bands),
        'band_names_from_files': bool(group.band_names),
        'count': group.count,
        'dtype': group.dtype,
        'sar': _sar(dataset),
        'nodata': group.nodata,
    }


def _describe_chip_files(chips: tuple[ChipFile, ...]) -> dict[str, Any]:
    """JSON-ready count, size range, pixels, formats and files of image chips."""
    widths = [c.width for c in chips]
    heights = [c.height for c in chips]
    return {
        'chips': len(chips),
        'size_min': [min(widths), min(heights)],
        'size_max': [max(widths), max(heights)],
        'pixels': sum(c.width * c.height for c in chips),
        'formats': sorted({c.driver for c in chips}),
        'files': [{'path': c.path, 'size': [c.width, c.height]} for c in chips],
    }


def format_description(description: dict[str, Any]) -> str:
    """Human-readable text of :func:`describe_rasters`'s result."""
    lines = []
    groups = description['groups']
    chip_groups = description.get('chip_groups', [])
    files = sum(len(g['files']) for g in groups)
    head = f'{len(groups)} sensor group(s), {files} raster(s)'
    if chip_groups:
        chips = sum(g['chips'] for g in chip_groups)
        head += f'; {len(chip_groups)} chip group(s), {chips} image chip(s)'
    joined = sum(g['chips']['chips'] for g in groups if g.get('chips'))
    if joined:
        head += f'; {joined} image chip(s) in sensor groups of their band layout'
    lines.append(head)
    for group in groups:
        lines.extend(_layout_lines(group, ''))
        lines.append(
            f'  CRS        {group["crs"]}, pixel {group["res"][0]:g} x {group["res"][1]:g}'
        )
        left, bottom, right, top = group['extent']
        lines.append(f'  extent     {left:.6g}, {bottom:.6g} : {right:.6g}, {top:.6g}')
        lines.append(
            f'  area       {group["area_km2"]:.4g} km2, {group["pixels"] / 1e6:.3g} Mpx'
        )
        lines.append(f'  files      {len(group["files"])}')
        for raster in group['files']:
            native = (
                f'{raster["crs"]}, {raster["res"][0]:g} m'
                if raster['crs'] != group['crs']
                else f'{raster["res"][0]:g}'
            )
            lines.append(
                f'    {raster["path"]}  ({raster["size"][0]} x {raster["size"][1]}, {native})'
            )
        if group.get('chips'):
            lines.append('  image chips of this band layout, each a sample of its own:')
            lines.extend(_chip_lines(group['chips']))
        lines.extend(_format_statistics(group))
    for group in chip_groups:
        lines.extend(_layout_lines(group, ': image chips, each a sample of its own'))
        lines.extend(_chip_lines(group))
        lines.extend(_format_statistics(group))
    if description['skipped']:
        lines.append('')
        lines.append(f'{len(description["skipped"])} file(s) skipped:')
        by_reason: dict[str, list[str]] = {}
        for skipped in description['skipped']:
            by_reason.setdefault(skipped['reason'], []).append(skipped['path'])
        for reason, paths in by_reason.items():
            lines.append(f'  {reason} ({len(paths)}):')
            lines.extend(f'    {path}' for path in paths[:_CHIPS_SHOWN])
            if len(paths) > _CHIPS_SHOWN:
                lines.append(
                    f'    ... and {len(paths) - _CHIPS_SHOWN} more (--json lists all)'
                )
    return '\n'.join(lines)


def _sar(dataset: SensorDataset | ChipDataset) -> dict[str, Any] | None:
    """The SAR scale and conversion decided for a group, or None when not SAR."""
    if dataset.sar is None:
        return None
    return {**dataset.sar.to_dict(), 'conversion': str(dataset.sar)}


def _chip_lines(chips: dict[str, Any]) -> list[str]:
    """Size range, count, formats and the first files of image chips."""
    (min_w, min_h), (max_w, max_h) = chips['size_min'], chips['size_max']
    size = (
        f'{min_w} x {min_h}'
        if (min_w, min_h) == (max_w, max_h)
        else f'{min_w} x {min_h} to {max_w} x {max_h}'
    )
    lines = [
        f'  size       {size} px ({chips["pixels"] / 1e6:.3g} Mpx)',
        f'  chips      {chips["chips"]} ({", ".join(chips["formats"])})',
    ]
    shown = chips['files'][:_CHIPS_SHOWN]
    lines.extend(f'    {c["path"]}  ({c["size"][0]} x {c["size"][1]})' for c in shown)
    if chips['chips'] > len(shown):
        lines.append(
            f'    ... and {chips["chips"] - len(shown)} more (--json lists all)'
        )
    return lines


def _layout_lines(group: dict[str, Any], title_suffix: str) -> list[str]:
    """A group's title, bands, SAR conversion and nodata, as ``info`` prints them."""
    kind = ' (SAR)' if group['sar'] else ''
    lines = [
        '',
        f'{group["name"]}{kind}{title_suffix}',
        f'  bands      {group["count"]} x {group["dtype"]}: '
        + ', '.join(group['bands']),
    ]
    if group['sar']:
        lines.append(f'  SAR        {group["sar"]["conversion"]}')
    lines.append(f'  nodata     {group["nodata"]}')
    return lines


def _format_statistics(group: dict[str, Any]) -> list[str]:
    """Lines of a group's statistics table, if it has statistics."""
    if 'statistics' not in group:
        return []
    stats = group['statistics']
    lines = [
        f'  statistics from {stats["pixels"]} valid pixels per band:',
        '    band            mean        std        p02        p98',
    ]
    for i, band in enumerate(stats['bands']):
        lines.append(
            f'    {band:<10} {stats["mean"][i]:>10.4g} {stats["std"][i]:>10.4g} '
            f'{stats["p02"][i]:>10.4g} {stats["p98"][i]:>10.4g}'
        )
    return lines


def _crs_name(crs: CRS) -> str:
    """``EPSG:XXXX`` where the CRS has a code, else its WKT."""
    epsg = crs.to_epsg()
    return f'EPSG:{epsg}' if epsg else crs.to_wkt()
