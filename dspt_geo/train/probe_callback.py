"""Probe while pre-training: is the encoder learning features that separate classes?

The MAE loss falls whether or not the features become useful, and a short run can
leave them worse than random initialisation (issue 12). :class:`KNNProbe` embeds a
small held-out labelled set with the current encoder every few steps (and at step
0 and the end), classifies its validation chips by a k-NN vote of its training
chips (:func:`~dspt_geo.probe.knn_classify`), and logs the accuracy to
``metrics.csv`` (column ``probe_knn``), the progress bar and ``previews/probe.png``
(also an image ``probe_knn`` for a ``--logger`` that takes images).
It warns when, after the warm-up, the probe is below its step-0 value, and keeps
the best-probing weights for export.
"""

import copy
import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader

from ..data.labels import LabelledData, collate_labelled
from ..data.statistics import BandStatistics
from ..data.transforms import normalise
from ..models import SensorEncoder
from ..outputs import atomic_write
from ..probe import embed, knn_classify
from .callbacks import MetricsCSV
from .tracking import log_image

__all__ = ('PROBE_COLUMN', 'KNNProbe', 'write_probe_curve')

logger = logging.getLogger(__name__)

#: Column of ``metrics.csv`` holding the probe's accuracy.
PROBE_COLUMN = 'probe_knn'


class KNNProbe(L.Callback):
    """k-NN accuracy of the encoder's frozen features on a held-out labelled set.

    The chips are read and normalised once (keep the set small: hundreds to a few
    thousand chips). Only the first process probes. Best-probe weights live in
    memory: a resumed run keeps the best since resuming.

    Attributes:
        history: ``(step, accuracy)`` of every probe so far.
        best_step: step of the best probe, or None.
        best_state: CPU copy of the model's state at the best probe (with
            ``keep_best``), else None.
    """

    def __init__(
        self,
        data: LabelledData,
        statistics: BandStatistics,
        sensor: str,
        *,
        every_n_steps: int,
        folder: str | os.PathLike[str],
        warmup_steps: int | None = None,
        metrics: MetricsCSV | None = None,
        keep_best: bool = False,
        batch_size: int = 64,
    ) -> None:
        """Initialise the callback.

        Args:
            data: labelled chips: the training split is the k-NN's memory, the
                validation (and test) split its queries.
            statistics: the sensor group's normalisation (as pre-training's).
            sensor: the sensor group whose stem embeds the chips.
            every_n_steps: probe every this many optimiser steps.
            folder: where ``probe.png`` goes.
            warmup_steps: the run's warm-up (None: 5 % of it, as the schedule's);
                later probes below step 0 warn.
            metrics: the run's metrics writer (a row per probe).
            keep_best: keep a copy of the weights at the best probe.
            batch_size: chips per forward pass.
        """
        self.data = data
        self.statistics = statistics
        self.sensor = sensor
        self.every_n_steps = every_n_steps
        self.folder = Path(folder)
        self.warmup_steps = warmup_steps
        self.metrics = metrics
        self.keep_best = keep_best
        self.batch_size = batch_size
        self.history: list[tuple[int, float]] = []
        self.best_step: int | None = None
        self.best_state: dict[str, Tensor] | None = None
        self._chips: dict[str, tuple[Tensor, Tensor]] = {}
        self._warned = False

    def _load(self) -> None:
        """Read and normalise the chips once: memory (train) and queries (val, test)."""
        parts: dict[str, list[Any]] = {'memory': [], 'query': []}
        for split in ('train', 'val', 'test'):
            dataset = self.data.split(split)
            if dataset is None:
                continue
            target = parts['memory' if split == 'train' else 'query']
            for batch in DataLoader(
                dataset, batch_size=256, collate_fn=collate_labelled
            ):
                image = normalise(batch['image'], batch['valid'], self.statistics)
                target.append((image, batch['label']))
        for name, batches in parts.items():
            if not batches:
                msg = f'the probe set has no {"training" if name == "memory" else "validation"} chips'
                raise ValueError(msg)
            self._chips[name] = (
                torch.cat([b[0] for b in batches]),
                torch.cat([b[1] for b in batches]),
            )

    def _features(
        self, encoder: SensorEncoder, images: Tensor, device: torch.device
    ) -> Tensor:
        """Mean-pooled features of normalised chips."""
        out = [
            embed(encoder, chunk.to(device))[0].float().cpu()
            for chunk in images.split(self.batch_size)
        ]
        return torch.cat(out)

    def probe(self, pl_module: L.LightningModule) -> float:
        """k-NN accuracy of the module's current encoder."""
        if not self._chips:
            self._load()
        model = pl_module.model
        was_training = model.training
        model.eval()
        encoder = SensorEncoder.from_mae(model, self.sensor)
        memory, memory_labels = self._chips['memory']
        query, query_labels = self._chips['query']
        with torch.inference_mode():
            predicted = knn_classify(
                self._features(encoder, memory, pl_module.device),
                memory_labels,
                self._features(encoder, query, pl_module.device),
                self.data.num_classes,
            )
        model.train(was_training)
        return float((predicted == query_labels).float().mean())

    def _run(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *, final: bool = False
    ) -> None:
        """Probe at the current step; record, plot, warn, keep the best."""
        step = trainer.global_step
        if not trainer.is_global_zero or (self.history and self.history[-1][0] == step):
            return
        accuracy = self.probe(pl_module)
        self.history.append((step, accuracy))
        logger.info('step %d: k-NN probe accuracy %.4f', step, accuracy)
        if self.metrics is not None:
            self.metrics.append(
                {
                    'step': step,
                    'epoch': trainer.current_epoch,
                    PROBE_COLUMN: f'{accuracy:.6g}',
                }
            )
        best = max(value for _, value in self.history)
        if accuracy >= best:
            self.best_step = step
            if self.keep_best:
                self.best_state = copy.deepcopy(
                    {
                        k: v.detach().cpu()
                        for k, v in pl_module.model.state_dict().items()
                    }
                )
        start = self.history[0]
        hurting = (
            start[0] == 0 and step > (self.warmup_steps or 0) and accuracy < start[1]
        )
        if hurting and (final or not self._warned):
            logger.warning(
                'the k-NN probe (%.4f at step %d) is below its step-0 value %.4f '
                '(random initialisation): pre-training is hurting the features so '
                'far; train longer, or try another learning rate or mask ratio',
                accuracy,
                step,
                start[1],
            )
            self._warned = True
        curve = write_probe_curve(self.history, self.folder / 'probe.png')
        log_image(trainer, PROBE_COLUMN, curve)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Probe before the first step (the random-initialisation value at step 0)."""
        if self.warmup_steps is None:
            self.warmup_steps = max(1, int(trainer.estimated_stepping_batches) // 20)
        self._run(trainer, pl_module)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Probe every *every_n_steps* steps; show the latest value in the bar."""
        if trainer.global_step % self.every_n_steps == 0:
            self._run(trainer, pl_module)
        if self.history:
            pl_module.log(
                'probe', self.history[-1][1], prog_bar=True, rank_zero_only=True
            )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Probe the final weights."""
        self._run(trainer, pl_module, final=True)


def write_probe_curve(history: list[tuple[int, float]], path: Path) -> np.ndarray:
    """Plot probe accuracy against steps, the step-0 value dashed; written atomically.

    Returns:
        the plot's pixels, ``(H, W, 3)`` uint8.
    """
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.2))
    steps, values = zip(*history, strict=True)
    axis.plot(steps, values, marker='o')
    if steps[0] == 0:
        axis.axhline(
            values[0], linestyle='--', color='grey', label='step 0 (random init)'
        )
        axis.legend(fontsize='small')
    axis.set_xlabel('step')
    axis.set_ylabel('k-NN probe accuracy')
    axis.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        figure.savefig(tmp, dpi=100)
        plt.close(figure)
        with Image.open(tmp) as png:
            pixels = np.asarray(png.convert('RGB'))
    return pixels
