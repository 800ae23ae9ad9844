"""Patches per second: plain rasterio vs torchgeo's RasterDataset vs dspt-geo.

All three read the same random, pixel-aligned windows of one tiled GeoTIFF and
return float32 torch tensors (the form a model consumes):

(a) plain rasterio: one open dataset, ``src.read(window=...)``, then a float32 tensor;
(b) torchgeo 0.8's stock ``RasterDataset`` indexed with the same (x, y, t) queries;
(c) dspt-geo's ``SensorDataset`` indexed with the same queries.

"first pass" opens fresh file handles (GDAL's block cache is empty for them, so
tiles are decompressed); "warm" reads the same windows again through the same
handles (tiles come from GDAL's block cache, so the fixed cost per sample dominates).
Each figure is the best of --repeats interleaved rounds. Usage::

    python benchmarks/data_pipeline.py [--size 4096] [--patch 224] [--samples 400]
"""

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window
from torchgeo.datasets import RasterDataset

from dspt_geo.data import SensorDataset, group_rasters, scan_rasters


class StockRasterDataset(RasterDataset):
    """torchgeo's RasterDataset, unchanged (all bands of any GeoTIFF)."""

    filename_glob = '*.tif'


def write_scene(path: Path, size: int, bands: int, compress: str) -> None:
    """A tiled uint16 GeoTIFF of smooth-ish random reflectance."""
    rng = np.random.default_rng(0)
    profile = {
        'driver': 'GTiff', 'width': size, 'height': size, 'count': bands,
        'dtype': 'uint16', 'crs': 'EPSG:32633',
        'transform': from_origin(500_000, 5_000_000, 10, 10),
        'tiled': True, 'blockxsize': 256, 'blockysize': 256,
        'compress': compress, 'nodata': 0,
    }  # fmt: skip
    with rasterio.open(path, 'w', **profile) as dst:
        for row in range(0, size, 512):
            rows = min(512, size - row)
            data = rng.integers(200, 4000, (bands, rows, size), dtype=np.uint16)
            dst.write(data, window=Window(0, row, size, rows))


def random_windows(size: int, patch: int, n: int) -> list[tuple[int, int]]:
    """Top-left (col, row) of *n* random windows."""
    rng = np.random.default_rng(1)
    return [tuple(v) for v in rng.integers(0, size - patch, (n, 2))]


def timed(read: Callable[[], int]) -> float:
    """Patches per second of one pass."""
    start = time.perf_counter()
    count = read()
    return count / (time.perf_counter() - start)


def main() -> None:
    """Run the benchmark and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=int, default=4096, help='scene side in pixels')
    parser.add_argument('--bands', type=int, default=4, help='bands of the scene')
    parser.add_argument('--patch', type=int, default=224, help='patch side in pixels')
    parser.add_argument('--samples', type=int, default=400, help='patches per pass')
    parser.add_argument('--compress', default='deflate', help='GeoTIFF compression')
    parser.add_argument('--repeats', type=int, default=5, help='rounds; best is kept')
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / 'scene.tif'
        write_scene(path, args.size, args.bands, args.compress)
        with rasterio.open(path) as src:
            transform = src.transform
        windows = random_windows(args.size, args.patch, args.samples)
        res = transform.a
        queries = []
        for col, row in windows:
            left, top = transform * (col, row)
            queries.append(
                (
                    slice(left, left + args.patch * res),
                    slice(top - args.patch * res, top),
                    slice(None, None),
                )
            )

        def plain() -> Callable[[], int]:
            src = rasterio.open(path)

            def read() -> int:
                for col, row in windows:
                    data = src.read(window=Window(col, row, args.patch, args.patch))
                    torch.from_numpy(data.astype(np.float32))
                return len(windows)

            return read

        def dataset_reader(
            make: Callable[[], RasterDataset],
        ) -> Callable[[], Callable[[], int]]:
            def fresh() -> Callable[[], int]:
                dataset = make()

                def read() -> int:
                    for query in queries:
                        image = dataset[query]['image']
                        assert image.shape[-1] == args.patch
                    return len(queries)

                return read

            return fresh

        (group,) = group_rasters(scan_rasters([path]).rasters)
        readers = {
            'plain rasterio': plain,
            'torchgeo RasterDataset': dataset_reader(lambda: StockRasterDataset(tmp)),
            'dspt-geo SensorDataset': dataset_reader(lambda: SensorDataset(group)),
        }
        # Rounds interleave the readers so that a slow spell of this shared machine
        # hits all of them alike; each keeps its best round.
        first: dict[str, list[float]] = {name: [] for name in readers}
        warm: dict[str, list[float]] = {name: [] for name in readers}
        for _ in range(args.repeats):
            for name, fresh in readers.items():
                read = fresh()
                first[name].append(timed(read))
                warm[name].append(timed(read))
        results = {name: (max(first[name]), max(warm[name])) for name in readers}

    base_first, base_warm = results['plain rasterio']
    print(
        f'{args.samples} random {args.patch}x{args.patch} windows of a {args.size}x'
        f'{args.size} {args.bands}-band uint16 GeoTIFF (256x256 tiles, '
        f'{args.compress}), best of {args.repeats}, 1 thread\n'
    )
    print(
        '| reader | first pass (patches/s) | vs rasterio | warm (patches/s) | vs rasterio |'
    )
    print('|---|---:|---:|---:|---:|')
    for name, (first, warm) in results.items():
        print(
            f'| {name} | {first:.0f} | {first / base_first:.2f}x | {warm:.0f} | '
            f'{warm / base_warm:.2f}x |'
        )
    ours, stock = results['dspt-geo SensorDataset'], results['torchgeo RasterDataset']
    print(
        f'\ndspt-geo vs torchgeo: {ours[0] / stock[0]:.1f}x first pass, '
        f'{ours[1] / stock[1]:.1f}x warm'
    )


if __name__ == '__main__':
    main()
