"""Shared fixtures: small georeferenced rasters written by the tests themselves."""

import json
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.crs import CRS
from rasterio.transform import from_origin

SHARED_DATA = Path(__file__).resolve().parents[1].parent / 'shared' / 'data'

RasterWriter = Callable[..., Path]


def write_raster(
    path: Path,
    data: np.ndarray,
    *,
    crs: str | None = 'EPSG:32633',
    origin: tuple[float, float] = (500_000.0, 5_000_000.0),
    res: float = 10.0,
    nodata: float | None = None,
    descriptions: Sequence[str] | None = None,
    tiled: bool = False,
    **profile: Any,
) -> Path:
    """Write *data* (bands, rows, cols) as a GeoTIFF; returns *path*."""
    if data.ndim == 2:
        data = data[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        'driver': 'GTiff',
        'width': data.shape[2],
        'height': data.shape[1],
        'count': data.shape[0],
        'dtype': data.dtype.name,
        'crs': CRS.from_user_input(crs) if crs else None,
        'transform': from_origin(*origin, res, res) if crs else None,
        'nodata': nodata,
    }
    if tiled:
        options.update(tiled=True, blockxsize=64, blockysize=64)
    options.update(profile)
    with rasterio.open(path, 'w', **options) as dst:
        dst.write(data)
        if descriptions:
            dst.descriptions = tuple(descriptions)
    return path


@pytest.fixture
def raster_writer(tmp_path: Path) -> RasterWriter:
    """Write a raster relative to the test's temporary folder."""

    def write(relative: str, data: np.ndarray, **kwargs: Any) -> Path:
        return write_raster(tmp_path / relative, data, **kwargs)

    return write


@pytest.fixture
def rng() -> np.random.Generator:
    """Seeded random generator."""
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Keep statistics and the sample out of the user's cache."""
    cache = tmp_path_factory.mktemp('cache')
    monkeypatch.setenv('DSPT_GEO_CACHE', str(cache))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    return cache


@pytest.fixture
def shared_data() -> Path:
    """The real sample data beside the checkout; skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip('real sample data (../shared/data) not present')
    return SHARED_DATA


DEBIAN_PYTHON = Path('/usr/bin/python3')
QGIS_PACKAGE = Path('/usr/lib/python3/dist-packages/qgis')
QGIS_CHECK = Path(__file__).with_name('predict') / 'qgis_check.py'


@pytest.fixture
def qgis_check(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """Open outputs in real QGIS (Debian's python3-qgis) and report what it saw.

    The check runs in Debian's python3, so that QGIS's libraries never meet the
    virtual environment's; the test skips where QGIS is not installed.
    """
    if not (DEBIAN_PYTHON.is_file() and QGIS_PACKAGE.is_dir()):
        pytest.skip('QGIS (Debian python3-qgis) is not installed')

    def check(mask: Path, detections: Path, project: Path) -> dict[str, Any]:
        args = {
            'mask': str(mask),
            'detections': str(detections),
            'project': str(project),
            'png': str(tmp_path / 'map.png'),
            'project_png': str(tmp_path / 'project.png'),
        }
        home = tmp_path / 'qgis-home'
        home.mkdir(mode=0o700, exist_ok=True)
        env = {
            'PATH': '/usr/bin:/bin',
            'HOME': str(home),
            'QT_QPA_PLATFORM': 'offscreen',
            'XDG_RUNTIME_DIR': str(home),
            'LANG': 'C.UTF-8',
        }
        done = subprocess.run(
            [str(DEBIAN_PYTHON), str(QGIS_CHECK), json.dumps(args)],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        assert Path(args['png']).stat().st_size > 0
        return json.loads(done.stdout.strip().splitlines()[-1])

    return check


# -- masks with palettes and sidecars (QGIS/GDAL class names) ------------------------

#: Palette of the palette masks: index -> colour (the rest of the 256 is black).
PALETTE = {0: (0, 0, 0), 1: (230, 25, 75), 2: (60, 180, 75), 3: (0, 130, 200)}


def palette_png(path: Path, values: np.ndarray) -> Path:
    """Write *values* as a mode "P" PNG with :data:`PALETTE`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(values.astype(np.uint8), mode='P')
    flat = [c for i in range(256) for c in PALETTE.get(i, (0, 0, 0))]
    image.putpalette(flat)
    image.save(path)
    return path


def aux_xml_rat(path: Path, rows: list[tuple[int, str, tuple[int, int, int]]]) -> Path:
    """A GDAL .aux.xml beside *path* with a raster attribute table of *rows*."""
    fields = [('Value', 0, 5), ('Class_Name', 2, 2), ('Red', 0, 6), ('Green', 0, 7)]
    fields.append(('Blue', 0, 8))
    defs = ''.join(
        f'<FieldDefn index="{i}"><Name>{n}</Name><Type>{t}</Type><Usage>{u}</Usage>'
        '</FieldDefn>'
        for i, (n, t, u) in enumerate(fields)
    )
    body = ''.join(
        f'<Row index="{i}"><F>{v}</F><F>{name}</F><F>{r}</F><F>{g}</F><F>{b}</F></Row>'
        for i, (v, name, (r, g, b)) in enumerate(rows)
    )
    sidecar = Path(f'{path}.aux.xml')
    sidecar.write_text(
        '<PAMDataset><PAMRasterBand band="1"><GDALRasterAttributeTable '
        f'tableType="thematic">{defs}{body}</GDALRasterAttributeTable>'
        '</PAMRasterBand></PAMDataset>'
    )
    return sidecar


def aux_xml_categories(path: Path, names: list[str]) -> Path:
    """A GDAL .aux.xml beside *path* with category names (value = position)."""
    items = ''.join(f'<Category>{name}</Category>' for name in names)
    sidecar = Path(f'{path}.aux.xml')
    sidecar.write_text(
        '<PAMDataset><PAMRasterBand band="1"><CategoryNames>'
        f'{items}</CategoryNames></PAMRasterBand></PAMDataset>'
    )
    return sidecar


def qml(path: Path, entries: list[tuple[int, str, str]], paletted: bool = True) -> Path:
    """A QGIS style beside *path*: paletted, or an exact pseudocolour ramp."""
    sidecar = path.with_suffix('.qml')
    if paletted:
        items = ''.join(
            f'<paletteEntry value="{v}" color="{c}" label="{label}" alpha="255"/>'
            for v, label, c in entries
        )
        renderer = (
            '<rasterrenderer type="paletted" band="1"><colorPalette>'
            f'{items}</colorPalette></rasterrenderer>'
        )
    else:
        items = ''.join(
            f'<item value="{v}" color="{c}" label="{label}" alpha="255"/>'
            for v, label, c in entries
        )
        renderer = (
            '<rasterrenderer type="singlebandpseudocolor" band="1"><rastershader>'
            f'<colorrampshader colorRampType="EXACT">{items}</colorrampshader>'
            '</rastershader></rasterrenderer>'
        )
    sidecar.write_text(
        f'<!DOCTYPE qgis><qgis version="3.34"><pipe>{renderer}</pipe></qgis>'
    )
    return sidecar


@pytest.fixture(scope='session')
def mask_files() -> SimpleNamespace:
    """Writers of palette PNG masks and of class-name sidecars beside masks."""
    return SimpleNamespace(
        PALETTE=PALETTE,
        palette_png=palette_png,
        aux_xml_rat=aux_xml_rat,
        aux_xml_categories=aux_xml_categories,
        qml=qml,
    )


# -- the detection data sets' own layouts (NWPU VHR-10, HRSC2016, DOTA) ----------------

#: Per data set, per image stem: (x0, y0, x1, y1 pixel box, class as written,
#: difficult) of each object in its 64 x 64 image.
DETECTION_OBJECTS: dict[str, dict[str, list[tuple[tuple[int, ...], str, bool]]]] = {
    'nwpu': {
        '001': [((8, 10, 24, 30), '1', False), ((40, 40, 60, 56), '10', False)],
        '002': [((4, 4, 20, 20), '2', False)],
        '003': [((30, 8, 50, 28), '1', False)],
    },
    'hrsc': {
        '100000001': [
            ((10, 10, 30, 40), '100000002', False),
            ((40, 20, 58, 36), '100000002', True),
        ],
        '100000002': [((5, 30, 25, 50), '100000003', False)],
        '100000003': [((30, 5, 50, 25), '100000002', False)],
    },
    'dota': {
        'P0000': [
            ((10, 10, 30, 30), 'plane', False),
            ((40, 40, 60, 60), 'small-vehicle', True),
            ((50, 5, 70, 20), 'plane', False),  # past the image's right edge
        ],
        'P0001': [((5, 30, 25, 50), 'small-vehicle', False)],
        'P0002': [((30, 5, 50, 25), 'plane', False)],
    },
}


def _bright_boxes(path: Path, boxes: Sequence[tuple[int, ...]], seed: int) -> None:
    """A dark noisy 64 x 64 RGB image with bright boxes, in the format of its suffix."""
    data = np.random.default_rng(seed).integers(0, 60, (64, 64, 3), dtype=np.uint8)
    for x0, y0, x1, y1 in boxes:
        data[y0:y1, x0:x1] = 230
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data).save(path)


def _nwpu_line(box: tuple[int, ...], name: str, k: int) -> str:
    """``(x1,y1),(x2,y2),c``; every other line spaced as some releases are."""
    x0, y0, x1, y1 = box
    sep = ', ' if k % 2 else ','
    return f'({x0}{sep}{y0}),({x1}{sep}{y1}),{name}'


def _hrsc_xml(stem: str, objects: list[tuple[tuple[int, ...], str, bool]]) -> str:
    """An ``HRSC_Image`` annotation as in HRSC2016's FullDataSet/Annotations."""
    items = ''.join(
        f'<HRSC_Object><Object_ID>{k}</Object_ID><Class_ID>{name}</Class_ID>'
        '<Object_NO>1</Object_NO><truncated>0</truncated>'
        f'<difficult>{int(difficult)}</difficult><box_xmin>{x0}</box_xmin>'
        f'<box_ymin>{y0}</box_ymin><box_xmax>{x1}</box_xmax><box_ymax>{y1}</box_ymax>'
        f'<mbox_cx>{(x0 + x1) / 2}</mbox_cx><mbox_cy>{(y0 + y1) / 2}</mbox_cy>'
        f'<mbox_w>{x1 - x0}</mbox_w><mbox_h>{y1 - y0}</mbox_h><mbox_ang>0</mbox_ang>'
        '<header_x>0</header_x><header_y>0</header_y></HRSC_Object>'
        for k, ((x0, y0, x1, y1), name, difficult) in enumerate(objects)
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<HRSC_Image>'
        f'<Img_ID>{stem}</Img_ID><Place_ID>100000001</Place_ID>'
        f'<Img_FileName>{stem}</Img_FileName><Img_FileFmt>bmp</Img_FileFmt>'
        '<Img_SizeWidth>64</Img_SizeWidth><Img_SizeHeight>64</Img_SizeHeight>'
        '<Img_SizeDepth>3</Img_SizeDepth><Img_Resolution>1.07</Img_Resolution>'
        f'<HRSC_Objects>{items}</HRSC_Objects></HRSC_Image>\n'
    )


def _dota_line(box: tuple[int, ...], name: str, difficult: bool, k: int) -> str:
    """A DOTA object: clockwise corners; every other one a diamond in its box."""
    x0, y0, x1, y1 = box
    if k % 2:
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        corners = [cx, y0, x1, cy, cx, y1, x0, cy]
    else:
        corners = [x0, y0, x1, y0, x1, y1, x0, y1]
    return ' '.join(map(str, [*corners, name, int(difficult)]))


def write_detection_set(kind: str, root: Path) -> SimpleNamespace:
    """Write a tiny data set in the file layout of the real NWPU VHR-10, HRSC2016 or DOTA.

    Returns:
        ``images`` and ``labels`` (the paths to give), ``objects`` (the written
        objects, :data:`DETECTION_OBJECTS`).
    """
    objects = DETECTION_OBJECTS[kind]
    for seed, (stem, items) in enumerate(objects.items()):
        boxes = [box for box, _, _ in items]
        match kind:
            case 'nwpu':
                top = root / 'NWPU VHR-10 dataset'
                _bright_boxes(top / 'positive image set' / f'{stem}.jpg', boxes, seed)
                # Negative images reuse the stems: the reader must not take them.
                _bright_boxes(top / 'negative image set' / f'{stem}.jpg', [], seed)
                text = '\n'.join(
                    _nwpu_line(box, name, k) for k, (box, name, _) in enumerate(items)
                )
                (top / 'ground truth').mkdir(parents=True, exist_ok=True)
                (top / 'ground truth' / f'{stem}.txt').write_text(text + '\n\n')
                images, labels = [top], [top / 'ground truth']
            case 'hrsc':
                top = root / 'HRSC2016' / 'FullDataSet'
                _bright_boxes(top / 'AllImages' / f'{stem}.bmp', boxes, seed)
                (top / 'Annotations').mkdir(parents=True, exist_ok=True)
                (top / 'Annotations' / f'{stem}.xml').write_text(_hrsc_xml(stem, items))
                images, labels = [top / 'AllImages'], [top / 'Annotations']
            case _:
                top = root / 'DOTA'
                split = 'val' if stem == 'P0002' else 'train'
                _bright_boxes(top / split / 'images' / f'{stem}.png', boxes, seed)
                lines = ['imagesource:GoogleEarth', 'gsd:0.146343590398']
                lines += [
                    _dota_line(box, name, difficult, k)
                    for k, (box, name, difficult) in enumerate(items)
                ]
                (top / split / 'labelTxt').mkdir(parents=True, exist_ok=True)
                (top / split / 'labelTxt' / f'{stem}.txt').write_text('\n'.join(lines))
                images = [top]
                labels = [top / 'train' / 'labelTxt', top / 'val' / 'labelTxt']
    return SimpleNamespace(images=images[0], labels=labels, objects=objects)


@pytest.fixture(scope='session')
def detection_sets() -> Callable[[str, Path], SimpleNamespace]:
    """Writer of tiny NWPU VHR-10, HRSC2016 and DOTA sets in their real layouts."""
    return write_detection_set
