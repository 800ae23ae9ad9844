"""What the tool sees in a set of raster folders, as data and as text."""

import os
from collections.abc import Iterable
from typing import Any

import shapely
from rasterio.crs import CRS
from rasterio.warp import transform_geom

from .dataset import SensorDataset
from .discovery import scan_rasters
from .groups import group_rasters
from .sar import SarMode
from .statistics import load_or_compute_statistics

__all__ = ('describe_rasters', 'format_description')

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
    """Describe the sensor groups found under *paths*.

    Args:
        paths: folders and files, as for :func:`~dspt_geo.data.scan_rasters`.
        crs: CRS override for every group.
        res: resolution override for every group.
        nodata: nodata override for every file.
        sar_mode: backscatter scale of SAR groups (affects statistics).
        stats: also estimate per-band normalisation statistics.
        cache_dir: statistics cache folder.

    Returns:
        a JSON-ready dict: ``groups`` (one entry per sensor group) and ``skipped``;
        a SAR group's ``sar`` holds the stored scale and the conversion decided
        (``sar_scale``, ``sar_mode``, ``conversion``), else it is None.
    """
    scan = scan_rasters(paths)
    groups = group_rasters(scan.rasters, crs=crs, res=res, nodata=nodata)
    described = []
    for group in groups:
        dataset = SensorDataset(group, sar_mode=sar_mode)
        footprint = shapely.union_all(list(dataset.index.geometry))
        left, bottom, right, top = footprint.bounds
        area = shapely.geometry.shape(
            transform_geom(group.crs, _EQUAL_AREA, shapely.geometry.mapping(footprint))
        ).area
        entry: dict[str, Any] = {
            'name': group.name,
            'bands': list(group.bands),
            'band_names_from_files': bool(group.band_names),
            'count': group.count,
            'dtype': group.dtype,
            'sar': None
            if dataset.sar is None
            else {**dataset.sar.to_dict(), 'conversion': str(dataset.sar)},
            'nodata': group.nodata,
            'crs': _crs_name(group.crs),
            'res': list(group.res),
            'extent': [left, bottom, right, top],
            'area_km2': area / 1e6,
            'pixels': sum(r.width * r.height for r in group.rasters),
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
        }
        if stats:
            entry['statistics'] = load_or_compute_statistics(
                dataset, cache_dir
            ).to_dict()
        described.append(entry)
    skipped = [{'path': s.path, 'reason': s.reason} for s in scan.skipped]
    return {'groups': described, 'skipped': skipped}


def format_description(description: dict[str, Any]) -> str:
    """Human-readable text of :func:`describe_rasters`'s result."""
    lines = []
    groups = description['groups']
    files = sum(len(g['files']) for g in groups)
    lines.append(f'{len(groups)} sensor group(s), {files} raster(s)')
    for group in groups:
        lines.append('')
        kind = ' (SAR)' if group['sar'] else ''
        lines.append(f'{group["name"]}{kind}')
        lines.append(
            f'  bands      {group["count"]} x {group["dtype"]}: '
            + ', '.join(group['bands'])
        )
        if group['sar']:
            lines.append(f'  SAR        {group["sar"]["conversion"]}')
        lines.append(f'  nodata     {group["nodata"]}')
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
        if 'statistics' in group:
            stats = group['statistics']
            lines.append(f'  statistics from {stats["pixels"]} valid pixels per band:')
            lines.append('    band            mean        std        p02        p98')
            for i, band in enumerate(stats['bands']):
                lines.append(
                    f'    {band:<10} {stats["mean"][i]:>10.4g} {stats["std"][i]:>10.4g} '
                    f'{stats["p02"][i]:>10.4g} {stats["p98"][i]:>10.4g}'
                )
    if description['skipped']:
        lines.append('')
        lines.append(f'{len(description["skipped"])} file(s) skipped:')
        lines.extend(f'  {s["path"]}: {s["reason"]}' for s in description['skipped'])
    return '\n'.join(lines)


def _crs_name(crs: CRS) -> str:
    """``EPSG:XXXX`` where the CRS has a code, else its WKT."""
    epsg = crs.to_epsg()
    return f'EPSG:{epsg}' if epsg else crs.to_wkt()
