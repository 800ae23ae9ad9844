"""The configuration of a pre-training run: defaults, YAML in and out."""

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

__all__ = ('PretrainConfig',)


@dataclass
class PretrainConfig:
    """Everything a pre-training run depends on; ``RUN_DIR/config.yaml`` holds it.

    Defaults follow the MAE recipe of the paper (ViT-B/16, mask 0.75, norm-pix loss,
    base lr 1.5e-4 scaled by batch / 256, weight decay 0.05, AdamW betas (0.9, 0.95),
    random resized crop 0.2-1 and flips), plus 90-degree rotations.
    """

    #: Raster folders and files to pre-train on.
    paths: list[str]
    #: Run folder: configuration, checkpoints, metrics, previews, the exported model.
    out: str
    #: timm ViT name.
    model: str = 'vit_base_patch16_224'
    #: Extra timm ``VisionTransformer`` arguments (e.g. ``depth``, ``embed_dim``).
    model_args: dict[str, Any] = field(default_factory=dict)
    #: Side of the training patches in pixels.
    image_size: int = 224
    #: Patch size; the model name's when None.
    patch_size: int | None = None
    #: Width, depth and heads of the MAE decoder.
    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    #: Share of patches masked.
    mask_ratio: float = 0.75
    #: Reconstruct per-patch normalised pixels.
    norm_pix_loss: bool = True
    #: Starting weights: a checkpoint file, a timm name in the local HF cache, or none.
    init: str = 'none'
    #: Patches per batch and process.
    batch_size: int = 64
    #: Batches whose gradients add up to one optimiser step.
    accumulate: int = 1
    #: Length: optimiser steps (takes precedence) or epochs.
    steps: int | None = None
    epochs: int | None = None
    #: Patches drawn per epoch over all processes.
    samples_per_epoch: int = 10_000
    #: Learning rate per 256 images; the peak is base_lr x effective batch / 256.
    base_lr: float = 1.5e-4
    #: Absolute peak learning rate, overriding base_lr's scaling.
    lr: float | None = None
    weight_decay: float = 0.05
    #: Warmup steps; None is 5 % of the run.
    warmup_steps: int | None = None
    #: Final learning rate as a share of the peak.
    min_lr_ratio: float = 0.0
    #: Range of the random resized crop's area share.
    crop_scale: tuple[float, float] = (0.2, 1.0)
    #: Patches with a smaller share of valid pixels are not trained on.
    min_valid_fraction: float = 0.5
    #: Data reading (see ``dspt-geo info``).
    sar_mode: str = 'db'
    nodata: float | None = None
    crs: str | None = None
    res: float | None = None
    #: Hardware: Lightning's accelerator, devices, nodes, strategy, precision.
    accelerator: str = 'auto'
    devices: str | int = 'auto'
    num_nodes: int = 1
    strategy: str = 'auto'
    #: None: bf16-mixed on a GPU, 32-true on the CPU.
    precision: str | None = None
    #: DataLoader worker processes per training process.
    num_workers: int = 2
    #: Save a checkpoint every this many optimiser steps (and at the end).
    checkpoint_every: int = 500
    #: Write a row of ``metrics.csv`` every this many optimiser steps.
    log_every: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        """Normalise types that YAML cannot tell apart."""
        self.paths = [str(p) for p in self.paths]
        self.out = str(self.out)
        self.crop_scale = (float(self.crop_scale[0]), float(self.crop_scale[1]))
        if isinstance(self.devices, str) and self.devices.isdigit():
            self.devices = int(self.devices)
        if self.steps is None and self.epochs is None:
            self.epochs = 100

    @property
    def run_dir(self) -> Path:
        """The run folder."""
        return Path(self.out)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as written to YAML."""
        data = dataclasses.asdict(self)
        data['crop_scale'] = list(self.crop_scale)
        return data

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the configuration as YAML, atomically."""
        path = Path(path)
        tmp = path.with_name(f'.{path.name}.tmp')
        tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        os.replace(tmp, path)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> 'PretrainConfig':
        """Build from plain data, naming unknown or missing keys.

        Raises:
            ConfigError: If a key is unknown or a required one is missing.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            msg = f'unknown configuration keys: {", ".join(unknown)}'
            raise ConfigError(msg)
        missing = [n for n in ('paths', 'out') if data.get(n) in (None, [], '')]
        if missing:
            msg = f'missing configuration: {", ".join(missing)}'
            raise ConfigError(msg)
        return cls(**data)

    @staticmethod
    def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
        """Read a YAML configuration file into plain data.

        Raises:
            ConfigError: If the file is not a YAML mapping.
        """
        try:
            data = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as error:
            msg = f'cannot read configuration {path}: {error}'
            raise ConfigError(msg) from error
        if not isinstance(data, dict):
            msg = f'configuration {path} is not a YAML mapping of option: value'
            raise ConfigError(msg)
        return data
