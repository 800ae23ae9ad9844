"""Images per second: the whole ``pretrain`` loop vs the bare MAE step.

(a) bare step: the same encoder and decoder, forward + backward + AdamW step on a
    synthetic batch already in memory (on the device);
(b) the loop: ``dspt_geo.train.pretrain`` on the built-in sample's rasters (optical
    and SAR groups, streamed, normalised, augmented), the same model and batch size.

Both exclude start-up: the loop is timed from its 5th optimiser step to the last (a
callback), the bare step after 3 warm-up steps; the bare step runs before and after
the loop and keeps its faster run. On a GPU, the loop also reports the
peak GPU memory. Usage::

    python benchmarks/pretrain.py [--model vit_small_patch16_224] [--batch-size 16]
        [--steps 25] [--image-size 224] [--precision 32-true] [--workers 2]
"""

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from dspt_geo.data.synthetic import write_sample_rasters
from dspt_geo.models import MaskedAutoencoder, create_encoder
from dspt_geo.train import PretrainConfig, pretrain
from dspt_geo.train.optim import adamw

_WARMUP = 5


class StepTimer(L.Callback):
    """Time the loop from step _WARMUP to the end."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.end = 0.0
        self.images = 0

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == _WARMUP and self.start is None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, module: Any, outputs: Any, batch: Any, *args: Any
    ) -> None:
        if self.start is not None:
            self.images += batch['image'].shape[0]
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.end = time.perf_counter()


def bare_step(args: argparse.Namespace, device: torch.device) -> float:
    """Images/s of forward + backward + AdamW on an in-memory batch."""
    encoder = create_encoder(args.model, in_chans=4, img_size=args.image_size)
    model = MaskedAutoencoder(encoder, {'optical': 4, 'sar': 2}).to(device)
    optimizer = adamw(model.parameters(), lr=1e-4)  # the loop's implementation
    batch = torch.randn(
        args.batch_size, 4, args.image_size, args.image_size, device=device
    )
    dtype = torch.bfloat16 if 'bf16' in args.precision else None
    steps = 0
    start = 0.0
    for step in range(args.steps + 3):
        if step == 3:
            if device.type == 'cuda':
                torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(batch, 'optical').loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps += step >= 3
    if device.type == 'cuda':
        torch.cuda.synchronize()
    return steps * args.batch_size / (time.perf_counter() - start)


def loop(args: argparse.Namespace, folder: Path) -> tuple[float, float]:
    """Images/s of the pretrain loop, and peak GPU memory in GiB (0 on the CPU)."""
    timer = StepTimer()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    config = PretrainConfig(
        paths=[str(folder / 'data')],
        out=str(folder / 'run'),
        model=args.model,
        image_size=args.image_size,
        batch_size=args.batch_size,
        steps=args.steps + _WARMUP,
        samples_per_epoch=(args.steps + _WARMUP) * args.batch_size,
        lr=1e-4,
        precision=args.precision,
        num_workers=args.workers,
        checkpoint_every=10**6,
    )
    pretrain(config, callbacks=[timer])
    peak = (
        torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
    )
    return timer.images / (timer.end - timer.start), peak


def main() -> None:
    """Run both and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', default='vit_small_patch16_224')
    parser.add_argument('--image-size', type=int, default=224)
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--steps', type=int, default=25, help='timed steps')
    parser.add_argument(
        '--precision', default='bf16-mixed' if torch.cuda.is_available() else '32-true'
    )
    parser.add_argument('--workers', type=int, default=2, help='DataLoader workers')
    args = parser.parse_args()
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_sample_rasters(folder / 'data', size=1024)
        # The bare step is timed before and after the loop and its better run kept,
        # so that a slow spell of a shared machine cannot flatter the loop.
        bare = bare_step(args, device)
        looped, peak = loop(args, folder)
        bare = max(bare, bare_step(args, device))

    card = (
        torch.cuda.get_device_name()
        if device.type == 'cuda'
        else f'CPU ({torch.get_num_threads()} threads)'
    )
    print(
        f'\n{args.model}, {args.image_size} px, batch {args.batch_size}, {args.precision}, {card}\n'
    )
    print('| | images/s | vs bare step |')
    print('|---|---:|---:|')
    print(f'| bare MAE step (in-memory batch) | {bare:.1f} | 1.00x |')
    print(
        f'| `pretrain` loop (rasters, 2 sensor groups) | {looped:.1f} | {looped / bare:.2f}x |'
    )
    if peak:
        print(f'\npeak GPU memory of the loop: {peak:.1f} GiB')


if __name__ == '__main__':
    main()
