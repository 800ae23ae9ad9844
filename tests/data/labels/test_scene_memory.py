"""Scene cells held in memory serve the same chips as reading the files."""

import math

import numpy as np
import pytest
import shapely
import torch

from dspt_geo.data.labels import BlockSplit, SceneWindows, open_labelled

#: (CRS, origin, pixel size) of the synthetic scenes: UTM metres and degrees.
GRIDS = {
    'utm': ('EPSG:32633', (500_000.0, 5_000_000.0), 10.0),
    'wgs84': ('EPSG:4326', (12.0, 45.0), 1e-4),
}
DTYPES = ('uint8', 'uint16', 'float32')
SIZE = 16


def _scenes(
    raster_writer, rng, grid: str, dtype: str, overlap: bool = False
) -> tuple[list, dict]:
    """Two images on one grid, with nodata (and NaN); apart, or overlapping."""
    crs, (x0, y0), res = GRIDS[grid]
    high = 250 if dtype == 'uint8' else 3000
    nodata = -9999.0 if dtype == 'float32' else 0
    paths = []
    for name, (col, row) in (('a', (0, 0)), ('b', (40 if overlap else 90, 8))):
        data = rng.integers(1, high, (2, 72, 80)).astype(dtype)
        data[:, :, :5] = nodata  # a nodata strip that the other file may fill
        if dtype == 'float32':
            data[:, 30:33, 50:54] = np.nan
        paths.append(
            raster_writer(
                f'img/{name}.tif',
                data,
                crs=crs,
                origin=(x0 + col * res, y0 - row * res),
                res=res,
                nodata=nodata,
            )
        )
    return paths, {'crs': crs, 'origin': (x0, y0), 'res': res}


def _polygons(rng, grid: dict, count: int = 60) -> list[shapely.Geometry]:
    """Random star-shaped polygons (not boxes: clipping changes their bounds)."""
    x0, y0 = grid['origin']
    res = grid['res']
    polygons = []
    for _ in range(count):
        col, row = rng.uniform(0, 170), rng.uniform(0, 80)
        angles = np.sort(rng.uniform(0, 2 * math.pi, 6))
        radii = rng.uniform(1.5, 9.0, 6)
        cols = col + radii * np.cos(angles)
        rows = row + radii * np.sin(angles)
        polygons.append(shapely.Polygon(zip(x0 + cols * res, y0 - rows * res)))
    return polygons


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        torch.testing.assert_close(value, b[key], rtol=0, atol=0, equal_nan=True)


def _open(task, kind, images, grid, raster_writer, vector_writer, geo, rng):
    """Labelled data of *task* with label rasters or vectors, split by blocks."""
    if kind == 'raster':
        values = rng.choice(np.array([1, 2, 3], np.uint8), (60, 150))
        values[40:, 60:100] = 0  # no label
        x0, y0 = grid['origin']
        labels = raster_writer(
            'lab/classes.tif',
            values,
            crs=grid['crs'],
            origin=(x0 + 4 * grid['res'], y0 - 2 * grid['res']),
            res=grid['res'],
            nodata=0,
        )
    else:
        polygons = _polygons(rng, grid)
        # Vectors in the other CRS: reprojected to the images' when opened.
        other = 'EPSG:4326' if grid['crs'] != 'EPSG:4326' else geo.UTM
        moved = [geo.to_crs(p, other, source=grid['crs']) for p in polygons]
        kinds = rng.choice(['car', 'ship'], len(polygons)).tolist()
        labels = vector_writer('lab/objects.gpkg', moved, crs=other, kind=kinds)
    block = 40 * grid['res']
    return open_labelled(
        task,
        images,
        labels,
        'kind' if kind == 'vector' else None,
        split=BlockSplit(size=block, val_fraction=0.3, seed=1),
        size=SIZE,
        background='background' if task == 'segment' else None,
    )


def _random_queries(dataset, count: int, rng) -> list[tuple[float, ...]]:
    """The training sampler's chips; validation: chips on a random cell's grid."""
    out = []
    if hasattr(dataset.sampler, 'queries'):
        queries = dataset.sampler.queries()
        for _ in range(count):
            x, y, _ = next(queries)
            out.append((x.start, y.start, x.stop, y.stop))
        return out
    xres, yres = dataset.images.res
    cells = [g.bounds for g in dataset.cells.geometry]
    while len(out) < count:
        left, bottom, right, top = cells[rng.integers(len(cells))]
        cols = round((right - left) / xres) - SIZE
        rows = round((top - bottom) / yres) - SIZE
        if cols < 0 or rows < 0:
            continue
        x = left + rng.integers(cols + 1) * xres
        y = top - rng.integers(rows + 1) * yres
        out.append((x, y - SIZE * yres, x + SIZE * xres, y))
    return out


@pytest.mark.parametrize('grid', sorted(GRIDS))
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize(
    ('task', 'kind'),
    [('segment', 'raster'), ('segment', 'vector'), ('detect', 'vector')],
)
def test_held_chips_equal_the_file_reads(
    grid, dtype, task, kind, raster_writer, vector_writer, geo, rng
):
    images, where = _scenes(raster_writer, rng, grid, dtype)
    data = _open(task, kind, images, where, raster_writer, vector_writer, geo, rng)
    cut = 0
    for split in (data.train, data.val):
        assert split is not None and len(split.cells) > 1
        assert split.hold_in_memory(split.memory_bytes())
        assert split.memory is not None
        assert split.memory.nbytes == split.memory_bytes()
        random = _random_queries(split, 150, rng)
        windows = [b for b, _ in SceneWindows(split, overlap=3).windows]
        grid_queries = [
            split._inside_cell(x.start, y.start) for x, y, _ in split.sampler
        ]
        for query in random:
            assert split.memory.sample(query) is not None  # on the cached grid
        held = 0
        for query in random + windows + grid_queries:
            sample = split.read(query)
            held += split.memory.sample(query) is not None
            _same(sample, split._read_files(query))
            if task == 'detect':
                boxes = sample['boxes']
                cut += int(((boxes == 0) | (boxes == SIZE)).any(dim=1).sum())
            else:
                assert sample['mask'][~sample['valid']].eq(255).all()
        assert held >= len(random) + len(grid_queries)
    if task == 'detect':
        assert cut > 10, 'boxes cut by the chip edge are compared'


def test_queries_off_the_grid_or_over_budget_read_the_files(
    raster_writer, vector_writer, geo, rng
):
    images, where = _scenes(raster_writer, rng, 'utm', 'uint16')
    data = _open(
        'detect', 'vector', images, where, raster_writer, vector_writer, geo, rng
    )
    train = data.train
    need = train.memory_bytes()

    assert need is not None
    assert not train.hold_in_memory(need - 1)
    assert train.memory is None
    assert train.hold_in_memory(need)
    for left, bottom, right, top in _random_queries(train, 20, rng):
        shifted = (left + 5.0, bottom - 5.0, right + 5.0, top - 5.0)  # half a pixel
        assert train.memory.sample(shifted) is None
        _same(train.read(shifted), train._read_files(shifted))


@pytest.mark.parametrize('case', ['coarser labels', 'overlapping images'])
def test_cells_read_by_resampling_or_merging_are_not_held(
    case, raster_writer, vector_writer, geo, rng
):
    images, where = _scenes(
        raster_writer, rng, 'wgs84', 'float32', overlap=case == 'overlapping images'
    )
    labels = raster_writer(
        'lab/coarse.tif',
        rng.choice(np.array([1, 2], np.uint8), (40, 90)),
        crs=where['crs'],
        origin=where['origin'],
        res=where['res'] * (2 if case == 'coarser labels' else 1),
        nodata=0,
    )

    data = open_labelled('segment', images, labels, split=None, size=SIZE)

    assert data.train.memory_bytes() is None
    assert not data.train.hold_in_memory(2**30)
    assert data.train.memory is None
    for query in _random_queries(data.train, 10, rng):
        assert data.train.read(query)['mask'].shape == (SIZE, SIZE)
