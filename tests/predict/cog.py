"""A Cloud-Optimized GeoTIFF check after GDAL's ``validate_cloud_optimized_geotiff.py``.

It reads the TIFF structure itself (no GDAL Python bindings needed) and returns the
problems found: every image tiled; the full-resolution image's IFD first and the
overviews after it, smallest last; all IFDs before the image data; overview data
before the full-resolution data, smallest overview first; each image's first tile
after its IFD.
"""

import struct
from pathlib import Path

TILE_WIDTH, TILE_OFFSETS, IMAGE_WIDTH, SUBFILE_TYPE = 322, 324, 256, 254
_TYPES = {1: 'B', 3: 'H', 4: 'I', 16: 'Q', 13: 'I', 18: 'Q'}


def read_ifds(path: Path) -> list[dict[str, object]]:
    """Each IFD's offset, width, subfile type, tiling and first tile offset."""
    data = path.read_bytes()
    order = {b'II': '<', b'MM': '>'}[data[:2]]
    (version,) = struct.unpack(order + 'H', data[2:4])
    big = version == 43
    offset = struct.unpack(
        order + ('Q' if big else 'I'), data[(8 if big else 4) : (16 if big else 8)]
    )[0]
    ifds = []
    while offset:
        count_fmt, entry_size, count_size = ('Q', 20, 8) if big else ('H', 12, 2)
        (count,) = struct.unpack(order + count_fmt, data[offset : offset + count_size])
        tags: dict[int, list[int]] = {}
        for i in range(count):
            entry = offset + count_size + i * entry_size
            if big:
                tag, kind, n = struct.unpack(order + 'HHQ', data[entry : entry + 12])
                value_at, inline = entry + 12, 8
            else:
                tag, kind, n = struct.unpack(order + 'HHI', data[entry : entry + 8])
                value_at, inline = entry + 8, 4
            if kind not in _TYPES:
                continue
            fmt = _TYPES[kind]
            size = struct.calcsize(fmt) * n
            if size > inline:
                (value_at,) = struct.unpack(
                    order + ('Q' if big else 'I'), data[value_at : value_at + inline]
                )
            tags[tag] = list(
                struct.unpack(order + fmt * n, data[value_at : value_at + size])
            )
        next_at = offset + count_size + count * entry_size
        ifds.append(
            {
                'offset': offset,
                'width': tags[IMAGE_WIDTH][0],
                'mask': bool(tags.get(SUBFILE_TYPE, [0])[0] & 4),
                'tiled': TILE_WIDTH in tags,
                'first_tile': min(
                    (o for o in tags.get(TILE_OFFSETS, []) if o), default=0
                ),
            }
        )
        offset = struct.unpack(
            order + ('Q' if big else 'I'), data[next_at : next_at + (8 if big else 4)]
        )[0]
    return ifds


def cog_problems(path: Path) -> list[str]:
    """What makes *path* not a valid COG (empty when it is one)."""
    ifds = [ifd for ifd in read_ifds(path) if not ifd['mask']]
    problems = []
    if not all(ifd['tiled'] for ifd in ifds):
        problems.append('not every image is tiled')
    widths = [ifd['width'] for ifd in ifds]
    if widths != sorted(widths, reverse=True) or len(set(widths)) != len(widths):
        problems.append(
            f'images are not full resolution first, smallest last: {widths}'
        )
    last_ifd = max(ifd['offset'] for ifd in ifds)
    first_data = min(ifd['first_tile'] for ifd in ifds)
    if last_ifd > first_data:
        problems.append('an IFD lies after image data')
    tiles = [ifd['first_tile'] for ifd in ifds]
    if tiles != sorted(tiles, reverse=True):
        problems.append(f'overview data does not come first, smallest first: {tiles}')
    if any(ifd['first_tile'] < ifd['offset'] for ifd in ifds):
        problems.append('a tile lies before its IFD')
    return problems
