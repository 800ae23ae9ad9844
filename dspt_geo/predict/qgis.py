"""QGIS styles and projects for prediction outputs, written without QGIS.

QGIS applies ``<name>.qml`` beside a layer's file as the layer's default style when
it loads the file, so every output gets one: a paletted renderer with the class
colours and names for class rasters (:func:`palette_qml`), a categorised renderer on
``class_id`` with one coloured symbol per class for detections
(:func:`categorized_qml`). :func:`write_qgis_project` writes a ``.qgz`` project (a
zip holding one ``.qgs`` XML document) that shows the input scene under the
outputs, each output styled by its ``.qml``, with paths relative to the project.

The XML follows QGIS 3.22 (the long-term release in Debian 12 and Ubuntu 22.04);
later releases read it too.
"""

import os
import uuid
import zipfile
from collections.abc import Sequence
from pathlib import Path
from xml.etree import ElementTree as ET

import pyogrio
import rasterio
from rasterio.crs import CRS

from .writers import RASTER_SUFFIXES, VECTOR_DRIVERS, atomic_path, write_text

__all__ = (
    'QGIS_VERSION',
    'categorized_qml',
    'palette_qml',
    'style_path',
    'write_qgis_project',
    'write_qml',
)

#: QGIS version written into styles and projects (the oldest one targeted).
QGIS_VERSION = '3.22.0-Białowieża'

_DOCTYPE = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"


def style_path(path: str | os.PathLike[str]) -> Path:
    """The ``.qml`` that QGIS loads as the default style of the layer at *path*."""
    path = Path(path)
    return path.with_name(path.stem + '.qml')


def _hex(colour: Sequence[int]) -> str:
    """``#rrggbb``."""
    return '#{:02x}{:02x}{:02x}'.format(*colour[:3])


def _to_text(root: ET.Element) -> str:
    """Indented XML with QGIS's doctype."""
    ET.indent(root)
    return _DOCTYPE + ET.tostring(root, encoding='unicode') + '\n'


def _palette_pipe(
    class_names: Sequence[str], class_colours: Sequence[Sequence[int]], band: int = 1
) -> ET.Element:
    """A raster ``<pipe>`` with a paletted renderer, nearest-neighbour resampling."""
    pipe = ET.Element('pipe')
    provider = ET.SubElement(pipe, 'provider')
    ET.SubElement(
        provider,
        'resampling',
        enabled='false',
        zoomedInResamplingMethod='nearestNeighbour',
        zoomedOutResamplingMethod='nearestNeighbour',
        maxOversampling='2',
    )
    renderer = ET.SubElement(
        pipe,
        'rasterrenderer',
        type='paletted',
        band=str(band),
        opacity='1',
        alphaBand='-1',
        nodataColor='',
    )
    ET.SubElement(renderer, 'rasterTransparency')
    palette = ET.SubElement(renderer, 'colorPalette')
    for value, (name, colour) in enumerate(
        zip(class_names, class_colours, strict=True)
    ):
        ET.SubElement(
            palette,
            'paletteEntry',
            value=str(value),
            color=_hex(colour),
            alpha='255',
            label=name,
        )
    ET.SubElement(pipe, 'brightnesscontrast', brightness='0', contrast='0', gamma='1')
    ET.SubElement(
        pipe, 'huesaturation', saturation='0', grayscaleMode='0', colorizeOn='0'
    )
    ET.SubElement(pipe, 'rasterresampler', maxOversampling='2')
    ET.SubElement(pipe, 'resamplingStage').text = 'resamplingFilter'
    return pipe


def palette_qml(
    class_names: Sequence[str], class_colours: Sequence[Sequence[int]], band: int = 1
) -> str:
    """Style of a class raster: a paletted renderer, one entry per class.

    Args:
        class_names: labels of values 0, 1, ...
        class_colours: RGB of values 0, 1, ...
        band: the band holding classes.

    Returns:
        the ``.qml`` document.

    .. versionadded:: 0.1
    """
    root = ET.Element(
        'qgis',
        version=QGIS_VERSION,
        styleCategories='Symbology|Rendering',
        hasScaleBasedVisibilityFlag='0',
    )
    root.append(_palette_pipe(class_names, class_colours, band))
    ET.SubElement(root, 'blendMode').text = '0'
    return _to_text(root)


def _option(parent: ET.Element, name: str, value: str) -> None:
    """A ``<Option name type="QString" value>`` property."""
    ET.SubElement(parent, 'Option', name=name, type='QString', value=value)


def _categorized_renderer(
    class_names: Sequence[str],
    class_colours: Sequence[Sequence[int]],
    field: str = 'class_id',
    fill_alpha: int = 60,
) -> ET.Element:
    """A ``<renderer-v2>`` categorised on *field*: coloured outlines, light fill."""
    renderer = ET.Element(
        'renderer-v2',
        type='categorizedSymbol',
        attr=field,
        symbollevels='0',
        enableorderby='0',
        forceraster='0',
    )
    categories = ET.SubElement(renderer, 'categories')
    symbols = ET.SubElement(renderer, 'symbols')
    for value, (name, colour) in enumerate(
        zip(class_names, class_colours, strict=True)
    ):
        ET.SubElement(
            categories, 'category', render='true', symbol=str(value), value=str(value),
            label=name, type='integer',
        )  # fmt: skip
        symbol = ET.SubElement(
            symbols, 'symbol', type='fill', name=str(value), alpha='1',
            clip_to_extent='1', force_rhr='0',
        )  # fmt: skip
        layer = ET.SubElement(
            symbol,
            'layer',
            {'class': 'SimpleFill', 'enabled': '1', 'locked': '0', 'pass': '0'},
        )
        options = ET.SubElement(layer, 'Option', type='Map')
        rgb = ','.join(str(c) for c in colour[:3])
        _option(options, 'color', f'{rgb},{fill_alpha}')
        _option(options, 'style', 'solid')
        _option(options, 'outline_color', f'{rgb},255')
        _option(options, 'outline_style', 'solid')
        _option(options, 'outline_width', '0.6')
        _option(options, 'outline_width_unit', 'MM')
        _option(options, 'joinstyle', 'miter')
    ET.SubElement(renderer, 'rotation')
    ET.SubElement(renderer, 'sizescale')
    return renderer


def categorized_qml(
    class_names: Sequence[str],
    class_colours: Sequence[Sequence[int]],
    field: str = 'class_id',
) -> str:
    """Style of a detection layer: one symbol per class, labelled by class name.

    Args:
        class_names: label of *field* values 0, 1, ...
        class_colours: RGB of each class.
        field: the integer class field.

    Returns:
        the ``.qml`` document.

    .. versionadded:: 0.1
    """
    root = ET.Element(
        'qgis',
        version=QGIS_VERSION,
        styleCategories='Symbology',
        hasScaleBasedVisibilityFlag='0',
    )
    root.append(_categorized_renderer(class_names, class_colours, field))
    ET.SubElement(root, 'blendMode').text = '0'
    ET.SubElement(root, 'featureBlendMode').text = '0'
    ET.SubElement(root, 'layerGeometryType').text = '2'
    return _to_text(root)


def write_qml(path: str | os.PathLike[str], text: str) -> Path:
    """Write a style beside a layer file, atomically.

    Args:
        path: the layer's file (its ``.qml`` is derived) or the ``.qml`` itself.
        text: the style document.

    Returns:
        the ``.qml`` path.

    .. versionadded:: 0.1
    """
    path = Path(path)
    return write_text(path if path.suffix == '.qml' else style_path(path), text)


def _srs(crs: CRS) -> ET.Element:
    """A ``<spatialrefsys>`` that QGIS reads from its WKT."""
    srs = ET.Element('spatialrefsys', nativeFormat='Wkt')
    ET.SubElement(srs, 'wkt').text = crs.to_wkt()
    ET.SubElement(srs, 'proj4').text = crs.to_proj4()
    authority = crs.to_authority()
    ET.SubElement(srs, 'authid').text = ':'.join(authority) if authority else ''
    ET.SubElement(srs, 'description').text = crs.to_string()
    ET.SubElement(srs, 'geographicflag').text = 'true' if crs.is_geographic else 'false'
    return srs


def _layer_info(path: Path) -> tuple[str, CRS, tuple[float, float, float, float]]:
    """Layer type, CRS and bounds of a raster or vector file."""
    if path.suffix.lower() in VECTOR_DRIVERS:
        info = pyogrio.read_info(path)
        crs = CRS.from_user_input(info['crs'])
        bounds = info.get('total_bounds')
        return 'vector', crs, tuple(bounds) if bounds is not None else (0, 0, 0, 0)
    with rasterio.open(path) as src:
        return 'raster', src.crs, tuple(src.bounds)


def _style_elements(path: Path) -> list[ET.Element]:
    """The renderer elements of the ``.qml`` beside *path* (none without one)."""
    qml = style_path(path)
    if not qml.is_file():
        return []
    root = ET.fromstring(qml.read_text(encoding='utf-8'))
    return [
        child for child in root if child.tag in ('pipe', 'renderer-v2', 'blendMode')
    ]


def write_qgis_project(
    path: str | os.PathLike[str],
    scene: str | os.PathLike[str] | None,
    outputs: Sequence[str | os.PathLike[str]],
    *,
    title: str | None = None,
    hidden: Sequence[str | os.PathLike[str]] = (),
) -> Path:
    """Write a ``.qgz`` project: *outputs* (styled by their ``.qml``) over *scene*.

    Paths are stored relative to the project, so the project moves with the files.
    The map opens on the scene's extent, in its CRS.

    Args:
        path: the ``.qgz`` file (replaced atomically if it exists).
        scene: the input scene (drawn with QGIS's default style), or None.
        outputs: rasters (``.tif``) and vector files (``.gpkg``, ``.geojson``,
            ``.fgb``; layer ``detections`` of a GeoPackage), topmost first.
        title: project title (default: the project's file name).
        hidden: layers among *outputs* that start switched off.

    Returns:
        *path*.

    Raises:
        ValueError: If an output is neither a raster nor a vector file.

    .. versionadded:: 0.1
    """
    path = Path(path)
    if path.suffix.lower() != '.qgz':
        path = path.with_suffix('.qgz')
    folder = path.parent.resolve()
    title = title or path.stem
    hidden_set = {Path(h).resolve() for h in hidden}
    layers = [Path(p) for p in outputs] + ([Path(scene)] if scene is not None else [])

    root = ET.Element('qgis', projectname=title, version=QGIS_VERSION)
    ET.SubElement(root, 'homePath', path='')
    ET.SubElement(root, 'title').text = title
    tree = ET.SubElement(root, 'layer-tree-group')
    ET.SubElement(tree, 'customproperties')
    project_layers = ET.SubElement(root, 'projectlayers')
    order = ET.Element('layerorder')
    extent_crs: CRS | None = None
    extent: tuple[float, float, float, float] | None = None
    for layer_path in layers:
        suffix = layer_path.suffix.lower()
        if suffix not in RASTER_SUFFIXES and suffix not in VECTOR_DRIVERS:
            msg = f'{layer_path}: not a raster (.tif) or vector ({", ".join(VECTOR_DRIVERS)}) file'
            raise ValueError(msg)
        kind, crs, bounds = _layer_info(layer_path)
        if extent is None or layer_path == layers[-1]:
            extent_crs, extent = crs, bounds
        relative = os.path.relpath(layer_path.resolve(), folder)
        source = relative if relative.startswith('..') else f'./{relative}'
        provider = 'gdal'
        if kind == 'vector':
            provider = 'ogr'
            if VECTOR_DRIVERS[suffix] == 'GPKG':
                source += '|layername=detections'
        layer_id = f'{layer_path.stem}_{uuid.uuid4().hex[:8]}'
        name = layer_path.stem
        checked = (
            'Qt::Unchecked' if layer_path.resolve() in hidden_set else 'Qt::Checked'
        )
        node = ET.SubElement(
            tree, 'layer-tree-layer', id=layer_id, name=name, source=source,
            providerKey=provider, checked=checked, expanded='1',
        )  # fmt: skip
        ET.SubElement(node, 'customproperties')
        ET.SubElement(order, 'layer', id=layer_id)

        attributes = {'type': kind, 'hasScaleBasedVisibilityFlag': '0'}
        if kind == 'vector':
            attributes.update(geometry='Polygon', wkbType='Polygon')
        element = ET.SubElement(project_layers, 'maplayer', attributes)
        ET.SubElement(element, 'id').text = layer_id
        ET.SubElement(element, 'datasource').text = source
        ET.SubElement(element, 'layername').text = name
        srs = ET.SubElement(element, 'srs')
        srs.append(_srs(crs))
        ET.SubElement(element, 'provider', encoding='UTF-8').text = provider
        element.extend(_style_elements(layer_path))
    root.append(order)

    if extent is not None and extent_crs is not None:
        canvas = ET.SubElement(
            root, 'mapcanvas', name='theMapCanvas', annotationsVisible='1'
        )
        ET.SubElement(canvas, 'units').text = (
            'degrees' if extent_crs.is_geographic else 'meters'
        )
        box = ET.SubElement(canvas, 'extent')
        for key, value in zip(('xmin', 'ymin', 'xmax', 'ymax'), extent, strict=True):
            ET.SubElement(box, key).text = repr(float(value))
        ET.SubElement(canvas, 'rotation').text = '0'
        ET.SubElement(canvas, 'destinationsrs').append(_srs(extent_crs))
        ET.SubElement(root, 'projectCrs').append(_srs(extent_crs))
    properties = ET.SubElement(root, 'properties')
    paths = ET.SubElement(properties, 'Paths')
    ET.SubElement(paths, 'Absolute', type='bool').text = 'false'
    # QGIS 3.22 reads <projectCrs> only when this legacy flag is set.
    spatial = ET.SubElement(properties, 'SpatialRefSys')
    ET.SubElement(spatial, 'ProjectionsEnabled', type='int').text = '1'

    text = _to_text(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        atomic_path(path) as temp,
        zipfile.ZipFile(temp, 'w', compression=zipfile.ZIP_DEFLATED) as archive,
    ):
        archive.writestr(f'{path.stem}.qgs', text)
    return path
