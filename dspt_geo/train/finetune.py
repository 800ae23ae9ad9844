"""The fine-tuning task (a LightningModule): one class for classify, segment, detect."""

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor, nn

from ..data.augment import CUTMIX_ALPHA, MIXUP_ALPHA, mix_batch
from ..models import build_task_model_from_config
from .metrics import TaskMetrics
from .optim import WarmupCosine, adamw, decay_groups, layer_decay_groups
from .rundir import random_states, restore_random_states

__all__ = ('AUX_WEIGHT', 'FinetuneTask')

logger = logging.getLogger(__name__)

#: Loss weight of the segmentation model's auxiliary FCN head (BEiT's, MAE's and
#: CSPT's UperNet configs).
AUX_WEIGHT = 0.4


class FinetuneTask(L.LightningModule):
    """Fine-tune a task model (classification, UperNet, ViTDet) from its encoder.

    The recipe of MAE's fine-tuning (He et al., "Masked Autoencoders Are Scalable
    Vision Learners", CVPR 2022): AdamW with layer-wise learning-rate decay (BEiT),
    no weight decay on norms, biases and tokens, linear warmup then cosine decay.
    Losses: classification: cross-entropy on soft targets, with label smoothing
    (0.1) and, with *mixup*, Mixup 0.8 / CutMix 1.0 (switched half and half, as
    MAE's configs); segmentation: cross-entropy over labelled pixels, optionally
    weighted per class, plus *aux_weight* times that of an auxiliary FCN head on
    the pyramid level at the patch stride, as the UperNet recipe of BEiT and MAE
    (the head exists in training only and is not part of :attr:`model`);
    detection: Faster R-CNN's four losses summed. Validation metrics are
    :class:`~dspt_geo.train.metrics.TaskMetrics`, logged as ``val_<name>``.

    Under DDP on GPUs the run's Trainer converts batch norm to SyncBatchNorm
    (``sync_batchnorm``); :meth:`on_fit_start` logs which norm is in use.

    With *freeze_encoder* (head-only fine-tuning, the standard comparison of
    starting weights on few labels) the encoder's parameters take no gradient and
    stay out of the optimiser, and the encoder stays in eval mode (no dropout, no
    drop path) while the head trains.
    """

    def __init__(
        self,
        model_config: Mapping[str, Any],
        class_names: Sequence[str],
        *,
        ignore_index: int = 255,
        lr: float = 1e-3,
        layer_decay: float = 0.65,
        weight_decay: float = 0.05,
        warmup_steps: int | None = None,
        min_lr_ratio: float = 0.0,
        class_weights: Sequence[float] | None = None,
        betas: tuple[float, float] = (0.9, 0.999),
        freeze_encoder: bool = False,
        label_smoothing: float = 0.1,
        mixup: bool = False,
        aux_weight: float = AUX_WEIGHT,
        model: nn.Module | None = None,
    ) -> None:
        """Initialise the task.

        Args:
            model_config: the task model's ``config()``; the model is rebuilt from
                it (random weights) unless *model* is given.
            class_names: class names in output order.
            ignore_index: mask value of unlabelled pixels.
            lr: peak learning rate of the head.
            layer_decay: layer-wise learning-rate decay.
            weight_decay: AdamW weight decay (not on norms, biases, embeddings).
            warmup_steps: linear warmup steps (default: 5 % of the run).
            min_lr_ratio: final learning rate as a share of the peak.
            class_weights: per-class weights of the segmentation loss.
            betas: AdamW betas.
            freeze_encoder: train the head only.
            label_smoothing: classify: label smoothing of the targets.
            mixup: classify: Mixup/CutMix training batches.
            aux_weight: segment: loss weight of the auxiliary FCN head (0: none).
            model: the model, with its starting weights (not stored in the
                hyperparameters; a checkpoint brings its own weights).
        """
        super().__init__()
        self.save_hyperparameters(ignore=['model'])
        #: Global step of the latest validation, None before the first.
        self.validated_step: int | None = None
        #: Confusion matrix (rows: labels) of the latest validation; None before
        #: the first and for detection.
        self.val_confusion: list[list[int]] | None = None
        self.configure_models(model)
        self.configure_losses()
        self.configure_metrics()

    @property
    def task(self) -> str:
        """``'classify'``, ``'segment'`` or ``'detect'``."""
        return str(self.hparams.model_config['task'])

    def configure_models(self, model: nn.Module | None = None) -> None:
        """Take *model*, or build the model from its config; freeze its encoder."""
        self.model = (
            model
            if model is not None
            else build_task_model_from_config(self.hparams.model_config)
        )
        self.aux_head = (
            self.model.auxiliary_head()
            if self.task == 'segment' and self.hparams.aux_weight > 0
            else None
        )
        if self.hparams.freeze_encoder:
            self.model.encoder.requires_grad_(False)
            self.model.encoder.eval()  # Lightning starts fit in the modules' modes

    def train(self, mode: bool = True) -> 'FinetuneTask':
        """Set the training mode; a frozen encoder stays in eval mode."""
        super().train(mode)
        if self.hparams.freeze_encoder:
            self.model.encoder.eval()
        return self

    def configure_losses(self) -> None:
        """Class weights of the segmentation loss, as a buffer (moves with the model)."""
        weights = self.hparams.class_weights
        self.register_buffer(
            'class_weight',
            torch.tensor(weights, dtype=torch.float32) if weights else None,
            persistent=False,
        )

    def configure_metrics(self) -> None:
        """The validation metrics."""
        self.val_metrics = TaskMetrics(
            self.task, self.hparams.class_names, self.hparams.ignore_index
        )

    def forward(self, images: Tensor) -> Any:
        """The model's output on normalised images (eval mode: detections)."""
        return self.model(images)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """One step: the task's loss on an augmented batch."""
        images = batch['image']
        match self.task:
            case 'classify':
                alphas = (MIXUP_ALPHA, CUTMIX_ALPHA) if self.hparams.mixup else (0, 0)
                images, targets = mix_batch(
                    images,
                    batch['label'],
                    len(self.hparams.class_names),
                    mixup_alpha=alphas[0],
                    cutmix_alpha=alphas[1],
                    smoothing=self.hparams.label_smoothing,
                )
                log_probs = F.log_softmax(self.model(images).float(), dim=1)
                loss = -(targets * log_probs).sum(dim=1).mean()
            case 'segment':
                loss = self._segmentation_loss(images, batch['mask'])
            case _:
                box_targets = [
                    {'boxes': boxes.float(), 'labels': labels + 1}
                    for boxes, labels in zip(
                        batch['boxes'], batch['labels'], strict=True
                    )
                ]
                losses = self.model(images, box_targets)
                loss = sum(losses.values(), images.new_zeros(()))
        self._log_loss(loss, images.shape[0])
        return loss

    def _log_loss(self, loss: Tensor, batch_size: int) -> None:
        """Log the training loss at the steps where it is read.

        Those are the steps Lightning writes to the loggers (every
        ``log_every_n_steps``; the progress bar shows the same value) and the last
        step of an epoch or of the run (the model file's final loss). ``self.log``
        costs about 0.9 ms a call on the CPU, 1.5 % of a tiny ViT's classify step
        (issue 15). ``metrics.csv`` takes its loss from the step's output, not
        from this log.
        """
        try:
            trainer = self.trainer
        except RuntimeError:  # a step outside a Trainer: nothing reads the log
            return
        step = self.global_step + 1
        every = trainer.log_every_n_steps
        if (
            (every and step % every == 0)
            or trainer.is_last_batch
            or 0 < trainer.max_steps <= step
        ):
            self.log('loss', loss, prog_bar=True, batch_size=batch_size)

    def _segmentation_loss(self, images: Tensor, mask: Tensor) -> Tensor:
        """Cross-entropy of the logits, plus the auxiliary head's, weighted."""
        features = self.model.forward_features(images)
        logits = [self.model.forward_head(features, images.shape[-2:])]
        if self.aux_head is not None:
            aux = self.aux_head(features[self.model.AUX_LEVEL])
            logits.append(
                F.interpolate(
                    aux, size=images.shape[-2:], mode='bilinear', align_corners=False
                )
            )
        if not (mask != self.hparams.ignore_index).any():
            # No labelled pixel: a zero loss that keeps DDP in step.
            return sum((x.sum() * 0.0 for x in logits), images.new_zeros(()))
        losses = [
            F.cross_entropy(
                x,
                mask,
                weight=self.class_weight,
                ignore_index=self.hparams.ignore_index,
            )
            for x in logits
        ]
        return losses[0] + sum(
            (self.hparams.aux_weight * x for x in losses[1:]), images.new_zeros(())
        )

    def on_fit_start(self) -> None:
        """Log whether batch norm is synchronised across the processes."""
        norms = [
            m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
        ]
        if self.trainer.world_size == 1 or not norms:
            return
        synced = sum(isinstance(m, nn.SyncBatchNorm) for m in norms)
        if synced:
            logger.info(
                'batch norm synchronised across %d processes (%d SyncBatchNorm layers)',
                self.trainer.world_size,
                synced,
            )
        else:
            logger.info(
                'batch norm per process (%d layers): torch synchronises it only on '
                'GPUs',
                len(norms),
            )

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Add a batch to the validation metrics."""
        self.val_metrics.update(batch, self.model(batch['image']))

    def on_validation_epoch_end(self) -> None:
        """Log the epoch's metrics (``val_accuracy``, ``val_miou``, ``val_map_50``, ...)."""
        report = self.val_metrics.compute()
        if self.task != 'detect':
            self.val_confusion = self.val_metrics.confusion.compute().long().tolist()
        for name, value in self.val_metrics.scalars(report).items():
            self.log(
                f'val_{name}', value, prog_bar=not math.isnan(value), sync_dist=True
            )
        self.val_metrics.reset()
        self.validated_step = self.global_step

    def optimizer(self) -> torch.optim.AdamW:
        """AdamW over the layer-wise decay groups (the auxiliary head at the head's rate)."""
        hp = self.hparams
        groups = layer_decay_groups(self.model, hp.lr, hp.weight_decay, hp.layer_decay)
        if self.aux_head is not None:
            top = self.model.num_layers + 1
            groups += [
                {**group, 'lr': hp.lr, 'layer_id': top}
                for group in decay_groups(
                    self.aux_head.named_parameters(), hp.weight_decay
                )
            ]
        return adamw(groups, hp.lr, tuple(hp.betas))

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        """:meth:`optimizer`, with warmup and cosine decay stepped every step."""
        hp = self.hparams
        optimizer = self.optimizer()
        total = int(self.trainer.estimated_stepping_batches)
        warmup = hp.warmup_steps if hp.warmup_steps is not None else max(1, total // 20)
        scheduler = WarmupCosine(optimizer, warmup, total, hp.min_lr_ratio)
        return {
            'optimizer': optimizer,
            'lr_scheduler': {'scheduler': scheduler, 'interval': 'step'},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the random generators' states, so a resumed run draws on as before."""
        checkpoint['rng_states'] = random_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the random generators' states saved by :meth:`on_save_checkpoint`."""
        restore_random_states(checkpoint.get('rng_states'))
