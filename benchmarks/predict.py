"""Whole-scene prediction: throughput against the bare model, and peak memory.

(a) Throughput: ``predict_scene`` (read, normalise, model, blend, write the COG)
against the bare model forward over the same number of windows, same batch size and
device, in one run; megapixels of windows per second. Rounds interleave the two and
each keeps its best round (the machine is shared).

(b) Peak memory: one subprocess per scene size runs ``predict_scene`` and reports
its peak resident set (``VmHWM``) and its resident set before predicting (after
imports and model creation). Scenes are 3-band uint8, written tiled and compressed,
strip by strip, so that the parent never holds one in memory.

Both use a small convolutional segmentation model. Usage::

    python benchmarks/predict.py [--sizes 2048 8192 16384] [--tile 256] [--overlap 32]
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window
from torch import nn

from dspt_geo.predict import PredictionSpec, TileGrid, predict_scene

CLASSES = 4


def make_model(width: int = 16) -> nn.Module:
    """A small fully convolutional segmentation net (receptive field 7x7)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, CLASSES, 3, padding=1),
    )


def make_spec(tile: int, overlap: int) -> PredictionSpec:
    """The model's prediction spec (RGB, uint8 statistics)."""
    return PredictionSpec.from_metadata(
        {
            'task': 'segment',
            'classes': [{'name': f'class {i}'} for i in range(CLASSES)],
            'sensor': {
                'name': 'rgb',
                'bands': ['red', 'green', 'blue'],
                'in_chans': 3,
                'nodata': 0,
                'sar_mode': None,
                'statistics': {'mean': [110.0] * 3, 'std': [40.0] * 3},
            },
            'tile': {'size': tile, 'overlap': overlap},
        }
    )


def write_scene(path: Path, size: int) -> None:
    """A tiled, compressed 3-band uint8 scene, written 512 rows at a time."""
    rng = np.random.default_rng(0)
    profile = {
        'driver': 'GTiff', 'width': size, 'height': size, 'count': 3, 'dtype': 'uint8',
        'crs': 'EPSG:32633', 'transform': from_origin(500_000, 5_000_000, 10, 10),
        'tiled': True, 'blockxsize': 512, 'blockysize': 512, 'compress': 'zstd',
        'zstd_level': 1, 'nodata': 0, 'bigtiff': 'if_safer',
    }  # fmt: skip
    cols = np.arange(size)
    with rasterio.open(path, 'w', **profile) as dst:
        dst.descriptions = ('red', 'green', 'blue')
        for row in range(0, size, 512):
            rows = np.arange(row, min(row + 512, size))[:, None]
            base = (60 + (rows // 97 + cols // 131) % 4 * 30).astype(np.uint8)
            noise = rng.integers(0, 16, (3, len(rows), size), dtype=np.uint8)
            dst.write(base[None] + noise, window=Window(0, row, size, len(rows)))


def rss_mb(key: str) -> float:
    """A ``/proc/self/status`` memory figure in MB."""
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith(key + ':'):
                return int(line.split()[1]) / 1024
    return math.nan


def child(args: argparse.Namespace) -> None:
    """Run one prediction and print its memory figures as JSON."""
    torch.set_num_threads(args.threads)
    model, spec = make_model(args.width), make_spec(args.tile, args.overlap)
    before = rss_mb('VmRSS')
    start = time.perf_counter()
    result = predict_scene(
        args.scene, model, spec, args.out, batch_size=args.batch, progress=False,
        overwrite=True, device=args.device,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                'before': before,
                'peak': rss_mb('VmHWM'),
                'seconds': seconds,
                'windows': result.windows_run,
            }
        )
    )


def throughput(args: argparse.Namespace, folder: Path) -> tuple[float, float, int]:
    """Best megapixels/s of predict_scene and of the bare model, and the windows."""
    scene = folder / f'throughput-{args.throughput_size}.tif'
    write_scene(scene, args.throughput_size)
    device = torch.device(
        args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    )
    model = make_model(args.width).to(device).eval()
    spec = make_spec(args.tile, args.overlap)
    windows = len(
        TileGrid(args.throughput_size, args.throughput_size, args.tile, args.overlap)
    )
    megapixels = windows * args.tile**2 / 1e6
    batch = torch.randn(args.batch, 3, args.tile, args.tile, device=device)
    autocast = (
        torch.autocast('cuda', dtype=torch.bfloat16) if device.type == 'cuda' else None
    )

    def bare() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for first in range(0, windows, args.batch):
                x = batch[: min(args.batch, windows - first)]
                if autocast is not None:
                    with autocast:
                        model(x).float()
                else:
                    model(x)
        if device.type == 'cuda':
            torch.cuda.synchronize()
        return megapixels / (time.perf_counter() - start)

    def full() -> float:
        start = time.perf_counter()
        predict_scene(
            scene, model, spec, folder / 'throughput-out.tif', batch_size=args.batch,
            progress=False, overwrite=True, device=device,
        )  # fmt: skip
        return megapixels / (time.perf_counter() - start)

    bare()  # warm-up
    rounds = {'bare': [], 'full': []}
    for _ in range(args.repeats):
        rounds['full'].append(full())
        rounds['bare'].append(bare())
    return max(rounds['full']), max(rounds['bare']), windows


def main() -> None:
    """Run the benchmark and print Markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[2048, 8192, 16384])
    parser.add_argument('--throughput-size', type=int, default=4096)
    parser.add_argument('--tile', type=int, default=256)
    parser.add_argument('--overlap', type=int, default=32)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--width', type=int, default=16, help='channels of the model')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--device', default=None)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--skip-throughput', action='store_true')
    parser.add_argument('--tmp', default=None, help='folder for the scenes')
    parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--scene', help=argparse.SUPPRESS)
    parser.add_argument('--out', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    torch.set_num_threads(args.threads)
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    setting = (
        f'{args.tile} px windows, overlap {args.overlap}, batch {args.batch}, {device}, '
        f'{args.threads} torch thread(s), {CLASSES} classes, model width {args.width}'
    )
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        folder = Path(tmp)
        if not args.skip_throughput:
            full, bare, windows = throughput(args, folder)
            print(
                f'\n(a) Throughput, {args.throughput_size}^2 scene, {windows} windows, '
                f'{setting}; best of {args.repeats}\n'
            )
            print('| run | window megapixels/s | vs bare model |')
            print('|---|---:|---:|')
            print(f'| bare model forward | {bare:.1f} | 1.00x |')
            print(
                f'| predict_scene (read, blend, write COG) | {full:.1f} | {full / bare:.2f}x |'
            )

        rows = []
        for size in args.sizes:
            scene = folder / f'scene-{size}.tif'
            write_scene(scene, size)
            command = [
                sys.executable, __file__, '--child', '--scene', str(scene),
                '--out', str(folder / f'out-{size}.tif'), '--tile', str(args.tile),
                '--overlap', str(args.overlap), '--batch', str(args.batch),
                '--threads', str(args.threads), '--width', str(args.width),
            ] + (['--device', args.device] if args.device else [])  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append((size, figures))
            scene.unlink()
            os.remove(folder / f'out-{size}.tif')
        print(f'\n(b) Peak memory, one process per scene, {setting}\n')
        print('| scene | scene MB (3-band uint8) | RSS before (MB) | peak RSS (MB) | '
              'peak - before (MB) | seconds |')  # fmt: skip
        print('|---|---:|---:|---:|---:|---:|')
        for size, f in rows:
            print(
                f'| {size}x{size} | {3 * size * size / 2**20:.0f} | {f["before"]:.0f} | '
                f'{f["peak"]:.0f} | {f["peak"] - f["before"]:.0f} | {f["seconds"]:.1f} |'
            )
        peaks = [f['peak'] for _, f in rows]
        print(
            f'\npeak spread: {max(peaks) - min(peaks):.0f} MB (target: within 300 MB)'
        )


if __name__ == '__main__':
    main()
