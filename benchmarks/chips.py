"""Chips per second: a plain decode loop vs dspt-geo's chip stream, same files.

For each chip folder (default: the real EuroSAT RGB JPEGs and UC Merced TIFFs in
``../shared/data``), every chip is read once per round:

(a) plain loop: Pillow for JPEG/PNG, rasterio for other formats, whole chip, then a
    float32 torch tensor (the form a model consumes);
(b) dspt-geo: :class:`~dspt_geo.data.ChipStream` over the folder's chip group,
    whole chips (``size=None``): image and valid mask, shuffled;
(c) dspt-geo: the same stream cutting ``--window`` px training windows (chips of
    that size or larger are read as windows; smaller ones would be enlarged).

Files are read once before timing (the page cache holds them, so decoding is
measured, not the disk). Each figure is the best of --repeats interleaved rounds.
Usage::

    python benchmarks/chips.py [FOLDER ...] [--window 64] [--repeats 5]
"""

import argparse
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
import torch
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning

from dspt_geo.data import ChipDataset, ChipGroup, ChipStream, discover_groups

SHARED = Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'labelled'
DEFAULT_FOLDERS = [
    SHARED / 'classification' / 'eurosat_rgb',
    SHARED / 'classification' / 'ucmerced',
]


def plain_loop(paths: list[str]) -> Callable[[], int]:
    """Decode every file as a plain loop would, to float32 tensors."""

    def run() -> int:
        for path in paths:
            if path.lower().endswith(('.jpg', '.jpeg', '.png')):
                with Image.open(path) as image:
                    data = np.asarray(image)
                tensor = torch.from_numpy(data.transpose(2, 0, 1).astype(np.float32))
            else:
                with rasterio.open(path) as src:
                    tensor = torch.from_numpy(src.read().astype(np.float32))
            assert tensor.ndim == 3
        return len(paths)

    return run


def stream(group: ChipGroup, size: int | None) -> Callable[[], int]:
    """Iterate dspt-geo's chip stream over every chip once."""
    dataset = ChipDataset(group)

    def run() -> int:
        count = 0
        for sample in ChipStream(dataset, size, len(dataset), seed=count):
            assert (
                sample['image'].ndim == 3
            )  # the plain loop's check (torch's any() costs ~70 us)
            count += 1
        return count

    return run


def main() -> None:
    """Print chips/s of each method and the ratios to the plain loop."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('folders', nargs='*', type=Path, default=DEFAULT_FOLDERS)
    parser.add_argument('--window', type=int, default=64)
    parser.add_argument('--repeats', type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter('ignore', NotGeoreferencedWarning)

    for folder in args.folders:
        if not folder.is_dir():
            print(f'{folder}: not present, skipped')
            continue
        (group,) = (g for g in discover_groups([folder]) if isinstance(g, ChipGroup))
        paths = list(group.paths)
        for path in paths:
            Path(path).read_bytes()
        methods = {
            'plain decode loop': plain_loop(paths),
            'dspt-geo ChipStream, whole chips': stream(group, None),
            f'dspt-geo ChipStream, {args.window} px windows': stream(
                group, args.window
            ),
        }
        best = dict.fromkeys(methods, float('inf'))
        for _ in range(args.repeats):
            for name, method in methods.items():
                started = time.perf_counter()
                count = method()
                best[name] = min(best[name], time.perf_counter() - started)
                assert count == len(paths)
        sizes = sorted({(c.width, c.height) for c in group.chips})
        formats = ', '.join(sorted({c.driver for c in group.chips}))
        print(
            f'\n{folder.name}: {len(paths)} chips, {formats}, {group.count} x '
            f'{group.dtype}, {sizes[0][0]}-{sizes[-1][0]} px'
        )
        baseline = len(paths) / best['plain decode loop']
        for name in methods:
            rate = len(paths) / best[name]
            print(f'  {name:<38} {rate:8.0f} chips/s  {rate / baseline:5.2f}x')


if __name__ == '__main__':
    main()
