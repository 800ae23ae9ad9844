"""The MAE pre-training task (a LightningModule)."""

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor

from ..models import MaskedAutoencoder, create_encoder
from .optim import WarmupCosine, adamw, decay_groups
from .rundir import random_states, restore_random_states

__all__ = ('MAEPretrainTask',)


class MAEPretrainTask(L.LightningModule):
    """Continued masked-image-modeling pre-training of a ViT on several sensor groups.

    The encoder is shared; every sensor group has its own patch-embedding stem and
    reconstruction head (He et al., "Masked Autoencoders Are Scalable Vision
    Learners", CVPR 2022; the DSPT recipe continues it on the target domain).
    """

    def __init__(
        self,
        model: str,
        sensors: Mapping[str, Sequence[str]],
        *,
        model_args: Mapping[str, Any] | None = None,
        image_size: int = 224,
        patch_size: int | None = None,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = True,
        lr: float = 1.5e-4,
        weight_decay: float = 0.05,
        warmup_steps: int | None = None,
        min_lr_ratio: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.95),
    ) -> None:
        """Initialise the task.

        Args:
            model: timm ViT name.
            sensors: band names of every sensor group, by group name.
            model_args: extra timm ``VisionTransformer`` arguments.
            image_size: side of the training patches in pixels.
            patch_size: patch size (default: the model name's).
            decoder_embed_dim: width of the decoder.
            decoder_depth: decoder blocks.
            decoder_num_heads: decoder attention heads.
            mask_ratio: share of patches masked.
            norm_pix_loss: reconstruct per-patch normalised pixels.
            lr: peak learning rate.
            weight_decay: AdamW weight decay (not on norms, biases, embeddings).
            warmup_steps: linear warmup steps (default: 5 % of the run).
            min_lr_ratio: final learning rate as a share of the peak.
            betas: AdamW betas.
        """
        super().__init__()
        self.save_hyperparameters()
        self.configure_models()

    def configure_models(self) -> None:
        """Build the encoder and the multi-sensor masked autoencoder."""
        hp = self.hparams
        first = next(iter(hp.sensors.values()))
        encoder = create_encoder(
            hp.model,
            in_chans=len(first),
            img_size=hp.image_size,
            patch_size=hp.patch_size,
            **dict(hp.model_args or {}),
        )
        self.model = MaskedAutoencoder(
            encoder,
            {name: len(bands) for name, bands in hp.sensors.items()},
            decoder_embed_dim=hp.decoder_embed_dim,
            decoder_depth=hp.decoder_depth,
            decoder_num_heads=hp.decoder_num_heads,
            norm_pix_loss=hp.norm_pix_loss,
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """One MAE step on a batch of one sensor group; nodata is left out of the loss."""
        output = self.model(
            batch['image'],
            batch['sensor'],
            self.hparams.mask_ratio,
            valid=batch.get('valid'),
        )
        self.log('loss', output.loss, prog_bar=True, batch_size=batch['image'].shape[0])
        return output.loss

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        """AdamW with warmup and cosine decay, stepped every optimiser step."""
        hp = self.hparams
        optimizer = adamw(
            decay_groups(self.model.named_parameters(), hp.weight_decay),
            hp.lr,
            tuple(hp.betas),
        )
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
