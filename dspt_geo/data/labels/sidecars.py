"""Class names and colours that integer masks carry with them.

A mask of class values (a label raster, a mask chip, a palette PNG) often says what
its values mean, in one of these places, read in this order of precedence (the
user's class table, ``--class-table``, comes before all of them):

1. a raster attribute table or category names in the GDAL ``.aux.xml`` beside the
   mask (``mask.tif.aux.xml``: ``<GDALRasterAttributeTable>`` with a name column,
   or ``<CategoryNames>``), as ArcGIS and ``gdal_edit``/QGIS write them;
2. a QGIS layer style ``.qml`` beside the mask (``mask.qml``) with a paletted
   ("Paletted/Unique values") or an exact-interpolation pseudocolour renderer:
   each entry's value, label and colour;
3. the mask's colour table (a palette PNG's palette, a GeoTIFF colour map):
   colours only.

The first source that names any value gives the names (values it leaves unnamed
keep their number); colours come from that source if it has them, else from the
colour table.
"""

import logging
import os
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from ...errors import LabelError
from .classes import ClassTable, Colour, parse_colour

__all__ = (
    'MaskClasses',
    'mask_classes',
    'mask_palette',
    'mask_table',
    'matches_by_colour',
)

logger = logging.getLogger(__name__)

#: Usage codes of GDAL raster attribute table columns (``GDALRATFieldUsage``).
_RAT_NAME, _RAT_MIN, _RAT_MINMAX = 2, 3, 5
_RAT_RED, _RAT_GREEN, _RAT_BLUE = 6, 7, 8


@dataclass(frozen=True)
class MaskClasses:
    """What a mask's sidecars say about its values.

    Attributes:
        names: class name per stored value (may be empty).
        colours: RGB colour per stored value (may be empty).
        source: where the names come from (a file, or ``'colour table'``), for
            the log; empty when nothing was found.
    """

    names: dict[int, str] = field(default_factory=dict)
    colours: dict[int, Colour] = field(default_factory=dict)
    source: str = ''


def mask_palette(path: str) -> dict[int, Colour]:
    """The colour table of a mask's first band (value -> RGB), empty if none.

    Args:
        path: the mask (a file or a GDAL path).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                if src.count != 1:
                    return {}
                colormap = src.colormap(1)
    except (ValueError, RasterioIOError):  # no colour table
        return {}
    return {int(k): (int(v[0]), int(v[1]), int(v[2])) for k, v in colormap.items()}


def matches_by_colour(table: ClassTable, palette: dict[int, Colour]) -> bool:
    """Whether palette masks are matched to *table* by colour rather than by value.

    Args:
        table: the user's class table.
        palette: the masks' palette (:func:`mask_palette`).

    Returns:
        True when every class colour is a palette colour and some class's
        value is painted in another colour than the class's (the table lists
        classes in another order than the palette, or gives no values).
    """
    if not palette or not set(table.colours) <= set(palette.values()):
        return False
    return any(
        palette.get(value) != colour
        for value, colour in zip(table.values, table.colours, strict=True)
    )


def mask_classes(path: str) -> MaskClasses:
    """Class names and colours of a mask's values from its sidecars.

    Args:
        path: the mask; sidecars are looked for beside it (not inside zips).

    Returns:
        names and colours per value, by the precedence of the module docstring.

    Raises:
        LabelError: If a sidecar exists but cannot be read.
    """
    palette = mask_palette(path)
    for reader in (_aux_xml_classes, _qml_classes):
        found = reader(path)
        if found.names:
            colours = found.colours or {v: c for v, c in palette.items()}
            return MaskClasses(found.names, colours, found.source)
    if palette:
        return MaskClasses({}, palette, 'colour table')
    return MaskClasses()


def mask_table(
    values: Sequence[int],
    path: str,
    ignore_index: int,
    ignore_values: Sequence[int] = (),
) -> ClassTable:
    """The class table of integer masks without a user's class table.

    Classes are the values the masks hold and, when a sidecar names classes, the
    values it names too (a class absent from the masks is still a class of the
    legend); names and colours come from :func:`mask_classes`.

    Args:
        values: the distinct values the masks hold (nodata left out).
        path: the mask whose sidecars are read (the first).
        ignore_index: see :class:`ClassTable`.
        ignore_values: stored values that mean "no label".

    Returns:
        the table, classes in value order.

    Raises:
        LabelError: If no class is left, or a sidecar names two values alike.
    """
    found = mask_classes(path)
    kept = sorted((set(values) | set(found.names)) - set(ignore_values))
    if not kept:
        msg = 'the masks hold no label value (all nodata or ignored)'
        raise LabelError(msg)
    names = tuple(found.names.get(v, str(v)) for v in kept)
    declared = all(v in found.colours for v in kept)
    try:
        table = ClassTable(
            names=names,
            colours=tuple(found.colours[v] for v in kept) if declared else (),
            values=tuple(kept),
            ignore_index=ignore_index,
            ignore_values=tuple(ignore_values),
        )
    except LabelError as error:
        msg = f'{found.source}: {error}; name each class once, or pass --class-table'
        raise LabelError(msg) from None
    if found.names:
        logger.info('class names from %s: %s', found.source, ', '.join(names))
    elif found.source:
        logger.info('class colours from the colour table of %s', path)
    return table


def _aux_xml_classes(path: str) -> MaskClasses:
    """Names (and colours) of band 1 in ``<mask>.aux.xml``: RAT, else categories."""
    sidecar = Path(f'{path}.aux.xml')
    if not sidecar.is_file():
        return MaskClasses()
    root = _parse(sidecar)
    band = next(
        (b for b in root.iter('PAMRasterBand') if b.get('band', '1') == '1'), None
    )
    if band is None:
        return MaskClasses()
    table = band.find('GDALRasterAttributeTable')
    if table is not None:
        found = _rat_classes(table, str(sidecar))
        if found.names:
            return found
    categories = band.find('CategoryNames')
    if categories is not None:
        names = {
            value: (item.text or '').strip()
            for value, item in enumerate(categories.findall('Category'))
        }
        names = {value: name for value, name in names.items() if name}
        return MaskClasses(names, {}, str(sidecar))
    return MaskClasses()


def _rat_classes(table: ET.Element, source: str) -> MaskClasses:
    """Names and colours of a GDAL raster attribute table, by value."""
    columns = table.findall('FieldDefn')
    usages = [int(c.findtext('Usage', '0')) for c in columns]
    titles = [(c.findtext('Name') or '').strip().lower() for c in columns]

    def column(usage: int, names: tuple[str, ...]) -> int | None:
        if usage in usages:
            return usages.index(usage)
        return next((i for i, t in enumerate(titles) if t in names), None)

    name_col = column(_RAT_NAME, ('class_name', 'classname', 'class', 'name', 'label'))
    value_col = next(
        (usages.index(u) for u in (_RAT_MINMAX, _RAT_MIN) if u in usages),
        next((i for i, t in enumerate(titles) if t in ('value', 'code')), None),
    )
    rgb_cols = [
        column(usage, (title,))
        for usage, title in (
            (_RAT_RED, 'red'),
            (_RAT_GREEN, 'green'),
            (_RAT_BLUE, 'blue'),
        )
    ]
    if name_col is None:
        return MaskClasses()
    names: dict[int, str] = {}
    colours: dict[int, Colour] = {}
    for row in table.findall('Row'):
        cells = [(f.text or '').strip() for f in row.findall('F')]
        try:
            value = (
                int(float(cells[value_col]))
                if value_col is not None
                else int(row.get('index', len(names)))
            )
            name = cells[name_col]
            if all(c is not None for c in rgb_cols):
                rgb = [float(cells[c]) for c in rgb_cols if c is not None]
                # GDAL writes 0-255 integers; some tools write 0-1 fractions.
                scale = 255 if max(rgb) <= 1 else 1
                colours[value] = parse_colour([round(v * scale) for v in rgb])
        except (IndexError, ValueError):
            msg = f'{source}: cannot read the raster attribute table row {cells}'
            raise LabelError(msg) from None
        if name:
            names[value] = name
    return MaskClasses(names, {v: colours[v] for v in names if v in colours}, source)


def _qml_classes(path: str) -> MaskClasses:
    """Names and colours of a QGIS raster style (``<stem>.qml``) beside the mask."""
    sidecar = Path(os.path.splitext(path)[0] + '.qml')
    if not sidecar.is_file():
        return MaskClasses()
    root = _parse(sidecar)
    entries = list(root.iter('paletteEntry'))
    if not entries:
        entries = [
            item
            for shader in root.iter('colorrampshader')
            if shader.get('colorRampType', '').upper() == 'EXACT'
            for item in shader.iter('item')
        ]
    names: dict[int, str] = {}
    colours: dict[int, Colour] = {}
    for entry in entries:
        try:
            value = float(entry.get('value', ''))
        except ValueError:
            continue
        if not value.is_integer():
            continue
        label = (entry.get('label') or '').strip()
        if label:
            names[int(value)] = label
        if entry.get('color'):
            colours[int(value)] = parse_colour(entry.get('color'))
    return MaskClasses(names, colours, str(sidecar))


def _parse(path: Path) -> ET.Element:
    """Parse an XML sidecar.

    Raises:
        LabelError: If it is not XML.
    """
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as error:
        msg = f'{path} is not readable XML ({error}); fix or remove it'
        raise LabelError(msg) from None
