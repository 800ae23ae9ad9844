"""Callbacks that write what a person checks during a run: metrics and images.

Images (reconstruction previews, confusion matrices) go to the run folder and to
the loggers of ``--logger`` that take images (:func:`~.tracking.log_image`).
"""

import csv
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image

from ..outputs import atomic_write
from .evaluate import confusion_image
from .tracking import log_image

__all__ = ('ConfusionImage', 'MetricsCSV', 'ReconstructionPreview')

logger = logging.getLogger(__name__)


class MetricsCSV(L.Callback):
    """Append loss, learning rate and images/s to ``metrics.csv`` every few steps.

    With *validation* metric names, every validation also appends a row of those
    metrics (read from the values the module logged). On resume, rows past the
    restored step (written after the last checkpoint of a killed run) are dropped
    first, so the curve continues without a repeat; the file is rewritten
    atomically, so a run killed again meanwhile keeps its rows.
    """

    FIELDS = ('step', 'epoch', 'sensor', 'loss', 'lr', 'images_per_s')

    def __init__(
        self,
        path: str | os.PathLike[str],
        every_n_steps: int = 10,
        fields: Sequence[str] = FIELDS,
        validation: Sequence[str] = (),
    ) -> None:
        """Initialise the callback.

        Args:
            path: the CSV file.
            every_n_steps: write a row every this many optimiser steps.
            fields: columns of the training rows, from :attr:`FIELDS`.
            validation: names of logged validation metrics, one column each.
        """
        self.path = Path(path)
        self.every_n_steps = every_n_steps
        self.validation = tuple(validation)
        self.fields = (*fields, *self.validation)
        self._images = 0
        self._since = time.perf_counter()
        self._last_step = -1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Drop rows beyond the step training starts from."""
        self._since = time.perf_counter()
        # The step training starts from has its row already (or is step 0); with
        # gradient accumulation, the batches before the first optimiser step end
        # on it too.
        self._last_step = trainer.global_step
        if not trainer.is_global_zero or not self.path.exists():
            return
        with self.path.open(newline='') as file:
            rows = [
                row
                for row in csv.DictReader(file)
                if int(row['step']) <= trainer.global_step
            ]
        with atomic_write(self.path) as tmp:
            self._write(rows, mode='w', path=tmp)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: dict[str, Any],
        batch_idx: int,
    ) -> None:
        """Count images; write a row every *every_n_steps* steps."""
        self._images += batch['image'].shape[0] * trainer.world_size
        step = trainer.global_step
        if (
            not trainer.is_global_zero
            or step % self.every_n_steps
            or step == self._last_step
        ):
            return
        self._last_step = step
        elapsed = time.perf_counter() - self._since
        loss = outputs['loss'] if isinstance(outputs, dict) else outputs
        # With layer-wise decay, the head's (largest) rate is the peak of the run.
        lr = max(group['lr'] for group in trainer.optimizers[0].param_groups)
        row = {
            'step': step,
            'epoch': trainer.current_epoch,
            'sensor': batch.get('sensor', ''),
            'loss': f'{float(loss):.6g}',
            'lr': f'{lr:.6g}',
            'images_per_s': f'{self._images / elapsed:.4g}',
        }
        pl_module.log(
            'img_s', self._images / elapsed, prog_bar=True, rank_zero_only=True
        )
        self._write([row], mode='a')
        self._images = 0
        self._since = time.perf_counter()

    def on_validation_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule
    ) -> None:
        """Write a row of the validation metrics (first process only)."""
        if not self.validation or trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        row: dict[str, Any] = {
            'step': trainer.global_step,
            'epoch': trainer.current_epoch,
        }
        for name in self.validation:
            if name in metrics:
                row[name] = f'{float(metrics[name]):.6g}'
        self._write([row], mode='a')

    def append(self, row: dict[str, Any]) -> None:
        """Append one row (first process only; columns not in the header are dropped)."""
        self._write([row], mode='a')

    def _write(
        self, rows: list[dict[str, Any]], mode: str, path: Path | None = None
    ) -> None:
        """Write rows to *path* (default: the CSV file), with the header when new."""
        path = path or self.path
        new = mode == 'w' or not path.exists()
        with path.open(mode, newline='') as file:
            writer = csv.DictWriter(
                file, fieldnames=self.fields, restval='', extrasaction='ignore'
            )
            if new:
                writer.writeheader()
            writer.writerows(rows)


class ReconstructionPreview(L.Callback):
    """Each epoch, a PNG per sensor group: input, masked input, reconstruction.

    The PNGs are also logged as images ``preview/<group>`` where the run's logger
    takes images.

    Three rows of tiles, shown as RGB from the group's red, green and blue bands where
    it names them (else its first three bands, or one band in grey), stretched
    between the 2nd and 98th percentile of each input tile.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        tiles: dict[str, torch.Tensor],
        bands: dict[str, list[str]],
    ) -> None:
        """Initialise the callback.

        Args:
            folder: where the PNGs go (``epoch003-<group>.png``).
            tiles: normalised preview tiles per group, ``(N, C, H, W)``.
            bands: band names per group.
        """
        self.folder = Path(folder)
        self.tiles = tiles
        self.bands = bands

    def on_train_epoch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule
    ) -> None:
        """Write this epoch's previews (first process only)."""
        if not trainer.is_global_zero:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        model = pl_module.model
        was_training = model.training
        model.eval()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            for name, tiles in self.tiles.items():
                tiles = tiles.to(pl_module.device)
                masked, recon = model.reconstruct(
                    tiles, name, pl_module.hparams.mask_ratio
                )
                path = self.folder / f'epoch{trainer.current_epoch:03d}-{name}.png'
                pixels = write_preview(path, tiles, masked, recon, self.bands[name])
                log_image(trainer, f'preview/{name}', pixels)
        model.train(was_training)
        logger.info('wrote reconstruction previews to %s', self.folder)


def _display_bands(bands: list[str]) -> list[int]:
    """Indexes of the bands to show as red, green, blue (or one grey band)."""
    lower = [b.lower() for b in bands]
    for names in (('red', 'green', 'blue'), ('b04', 'b03', 'b02')):
        if all(n in lower for n in names):
            return [lower.index(n) for n in names]
    return [0, 1, 2] if len(bands) >= 3 else [0]


def write_preview(
    path: Path,
    tiles: torch.Tensor,
    masked: torch.Tensor,
    recon: torch.Tensor,
    bands: list[str],
) -> np.ndarray:
    """Write input / masked / reconstruction rows of tiles as one PNG.

    Returns:
        the PNG's pixels, ``(H, W)`` or ``(H, W, 3)`` uint8.
    """
    show = _display_bands(bands)
    rows = []
    for images in (tiles, masked, recon):
        picked = images[:, show].float().cpu().numpy()
        rows.append(np.concatenate(list(picked), axis=2))
    grid = np.concatenate(rows, axis=1)  # (C, 3H, N*W)
    reference = tiles[:, show].float().cpu().numpy()
    low, high = np.percentile(reference, 2), np.percentile(reference, 98)
    scaled = np.clip((grid - low) / max(high - low, 1e-6), 0, 1)
    pixels = (scaled * 255).astype(np.uint8)
    pixels = pixels[0] if pixels.shape[0] == 1 else np.moveaxis(pixels, 0, -1)
    zoom = max(1, 128 // tiles.shape[-1])  # small tiles are enlarged to be seen
    pixels = pixels.repeat(zoom, axis=0).repeat(zoom, axis=1)
    with atomic_write(path) as tmp:
        Image.fromarray(pixels).save(tmp, format='PNG')
    return pixels


class ConfusionImage(L.Callback):
    """After every validation, the confusion matrix as an image for the logger.

    Logged as ``val_confusion`` where the run's logger takes images (classification
    and segmentation); nothing is written to the run folder.
    """

    def on_validation_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule
    ) -> None:
        """Draw the matrix the task kept from its last validation and log it."""
        matrix = getattr(pl_module, 'val_confusion', None)
        if trainer.sanity_checking or matrix is None or not trainer.loggers:
            return
        image = confusion_image(matrix, pl_module.hparams.class_names)
        log_image(trainer, 'val_confusion', np.asarray(image))
