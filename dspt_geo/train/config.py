"""The configurations of pre-training and fine-tuning runs: defaults, YAML in and out."""

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, ClassVar, Literal, Self, get_args, get_origin

import yaml

from ..data.labels.split import (
    BlockSplit,
    ColumnSplit,
    FolderSplit,
    RandomSplit,
    SplitSpec,
)
from ..data.sar import SarMode
from ..errors import ConfigError
from ..outputs import atomic_write
from ..task import Task
from .tracking import check_logger

__all__ = (
    'CLASS_WEIGHTS',
    'POS_EMBEDS',
    'FinetuneConfig',
    'PretrainConfig',
    'RunConfig',
    'parse_split',
)


class RunConfig:
    """What the configurations of runs share: the run folder and YAML in and out.

    Subclasses are dataclasses with an ``out`` field (the run folder) and name the
    keys a configuration must hold in :attr:`REQUIRED`.
    """

    #: Keys that must be given (not None, empty or missing).
    REQUIRED: ClassVar[tuple[str, ...]] = ('out',)

    out: str

    @property
    def run_dir(self) -> Path:
        """The run folder."""
        return Path(self.out)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as written to YAML."""
        data: dict[str, Any] = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in data.items()
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the configuration as YAML, atomically."""
        path = Path(path)
        with atomic_write(path) as tmp:
            tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Build from plain data (a YAML file's, or the options'), checking each key.

        Values are checked against the fields' types: an integer is a number, a
        single string a one-item list, a list a tuple (YAML has no tuples).

        Raises:
            ConfigError: If a key is unknown, a required one is missing, or a value
                is not of its field's type.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            msg = f'unknown configuration keys: {", ".join(unknown)}'
            raise ConfigError(msg)
        missing = [n for n in cls.REQUIRED if data.get(n) in (None, [], '')]
        if missing:
            msg = f'missing configuration: {", ".join(missing)}'
            raise ConfigError(msg)
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        return cls(
            **{key: _typed(key, value, types[key]) for key, value in data.items()}
        )

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


@dataclass
class PretrainConfig(RunConfig):
    """Everything a pre-training run depends on; ``RUN_DIR/config.yaml`` holds it.

    Defaults follow the MAE recipe of the paper (ViT-B/16, mask 0.75, norm-pix loss,
    base lr 1.5e-4 scaled by batch / 256, weight decay 0.05, AdamW betas (0.9, 0.95),
    random resized crop 0.2-1 and flips), plus 90-degree rotations.
    """

    REQUIRED: ClassVar[tuple[str, ...]] = ('paths', 'out')

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
    sar_mode: SarMode = 'auto'
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
    #: Held-out labelled chips for a k-NN probe while training (issue 12), as
    #: ``finetune classify`` reads them; none: no probe.
    probe_images: list[str] = field(default_factory=list)
    probe_labels: list[str] = field(default_factory=list)
    #: Probe every this many optimiser steps; None: every ``checkpoint_every``.
    probe_every: int | None = None
    #: Export the best-probing weights as the model (the last as
    #: ``pretrained-last.safetensors``).
    keep_best_probe: bool = False
    #: Lightning logger beside ``metrics.csv``: none, csv, tensorboard or mlflow.
    logger: str = 'none'
    seed: int = 0

    def __post_init__(self) -> None:
        """Normalise types that YAML cannot tell apart; check the logger.

        Raises:
            ConfigError: If the logger is unknown or its package is missing.
        """
        check_logger(self.logger)
        self.paths = [str(p) for p in self.paths]
        self.probe_images = [str(p) for p in _as_list(self.probe_images)]
        self.probe_labels = [str(p) for p in _as_list(self.probe_labels)]
        self.out = str(self.out)
        self.crop_scale = (float(self.crop_scale[0]), float(self.crop_scale[1]))
        if isinstance(self.devices, str) and self.devices.isdigit():
            self.devices = int(self.devices)
        if self.steps is None and self.epochs is None:
            self.epochs = 100


#: How segmentation losses weight classes (see ``FinetuneConfig.class_weights``).
CLASS_WEIGHTS = ('auto', 'median', 'inverse', 'none')

#: Position embeddings of fine-tuning (see ``FinetuneConfig.pos_embed``).
POS_EMBEDS = ('auto', 'learned')


@dataclass
class FinetuneConfig(RunConfig):
    """Everything a fine-tuning run depends on; ``RUN_DIR/config.yaml`` holds it.

    Defaults follow MAE's fine-tuning recipe (He et al. 2022): AdamW, base lr 1e-3
    scaled by batch / 256, layer-wise lr decay 0.65, drop path 0.1, weight decay
    0.05, warmup then cosine decay. ``model``, ``model_args``, ``image_size`` and
    ``patch_size`` left as None are taken from a dspt-geo pre-trained ``init`` file
    (else ``vit_base_patch16_224`` at 224 pixels).
    """

    REQUIRED: ClassVar[tuple[str, ...]] = ('task', 'images', 'out')

    #: ``'classify'``, ``'segment'`` or ``'detect'``.
    task: Task
    #: Image rasters, chip folders, or a folder (or .zip) of class folders.
    images: list[str]
    #: Run folder: configuration, checkpoints, metrics, the fine-tuned model.
    out: str
    #: Label files (rasters, vectors, tables, COCO, VOC); none for class folders.
    labels: list[str] = field(default_factory=list)
    #: Column of vector or table labels holding the class.
    class_column: str | None = None
    #: Class table file (JSON or CSV of names, values, colours); default: derived.
    class_table: str | None = None
    #: Class of vector labels without a class column; None: the label file's stem.
    class_name: str | None = None
    #: ``auto``, ``none``, ``folder``, ``column:NAME``, ``blocks[:SIZE]`` or ``random``.
    split: str = 'auto'
    #: Train on this share of the training labels, in (0, 1] (few-label runs): per
    #: class for classification (at least one each), of images (chips) or regions
    #: (blocks of scenes) for segmentation and detection; None: all.
    label_fraction: float | None = None
    #: Seed of the label fraction's draw; None: ``seed``.
    label_seed: int | None = None
    #: Starting weights: a dspt-geo pretrained file, an MAE/timm/SSL4EO file, or none.
    init: str = 'none'
    #: timm ViT name; None: the init file's, else vit_base_patch16_224.
    model: str | None = None
    #: Extra timm ``VisionTransformer`` arguments; None: the init file's.
    model_args: dict[str, Any] | None = None
    #: Side of the training chips in pixels; None: the init file's, else 224.
    image_size: int | None = None
    #: Patch size; None: the init file's, else the model name's.
    patch_size: int | None = None
    #: Keyword arguments of the task model (head width, detector settings, ...).
    head_args: dict[str, Any] = field(default_factory=dict)
    #: Chips per batch and process.
    batch_size: int = 32
    #: Length: optimiser steps (takes precedence) or epochs.
    steps: int | None = None
    epochs: int | None = None
    #: Training chips per epoch drawn from scenes; None: as many as tile them.
    samples_per_epoch: int | None = None
    #: Learning rate per 256 images; the peak is base_lr x effective batch / 256.
    base_lr: float = 1e-3
    #: Absolute peak learning rate (of the head), overriding base_lr's scaling.
    lr: float | None = None
    #: Layer-wise learning-rate decay: layer i learns at lr x decay^(depth + 1 - i).
    layer_decay: float = 0.65
    #: Stochastic depth rate of the encoder blocks.
    drop_path: float = 0.1
    weight_decay: float = 0.05
    #: Warmup steps; None is 5 % of the run.
    warmup_steps: int | None = None
    #: Final learning rate as a share of the peak.
    min_lr_ratio: float = 0.0
    #: Train the head only: the encoder keeps its starting weights (and runs in
    #: eval mode, without dropout or drop path).
    freeze_encoder: bool = False
    #: Classification recipe (issue 13): label smoothing of the targets,
    #: Mixup 0.8 / CutMix 1.0, probability of random erasing, and band-safe
    #: photometric jitter (per-band gain and offset, blur).
    label_smoothing: float = 0.1
    mixup: bool = False
    random_erase: float = 0.25
    band_jitter: bool = True
    #: Position embedding: ``auto`` (the init weights' kind: fixed sin-cos, or
    #: learned when they learned theirs) or ``learned`` (trainable, initialised
    #: from the sin-cos of the pre-training grid, resampled bicubically).
    pos_embed: str = 'auto'
    #: Estimate normalisation statistics from the labelled data instead of using
    #: those the init file stores for the images' sensor group.
    recompute_stats: bool = False
    #: Segmentation class weights: none (plain cross-entropy, as the reference
    #: recipes), median, inverse (frequency) or auto (median frequency where
    #: classes are imbalanced).
    class_weights: str = 'none'
    #: Validate every this many optimiser steps; None: every epoch.
    val_every: int | None = None
    #: Save a checkpoint every this many optimiser steps (and at the end).
    checkpoint_every: int = 500
    #: Write a row of ``metrics.csv`` every this many optimiser steps.
    log_every: int = 10
    #: Overlap of prediction and evaluation windows over scenes; None: a quarter
    #: of the image size.
    tile_overlap: int | None = None
    #: Detections scoring below are dropped by ``dspt-geo predict`` (detect).
    score_threshold: float = 0.5
    #: Hardware: Lightning's accelerator, devices, nodes, strategy, precision.
    accelerator: str = 'auto'
    devices: str | int = 'auto'
    num_nodes: int = 1
    strategy: str = 'auto'
    #: None: bf16-mixed on a GPU, 32-true on the CPU.
    precision: str | None = None
    #: DataLoader worker processes per training process.
    num_workers: int = 2
    #: MiB the classification chips, or the scene cells of segment and detect,
    #: may take in memory (read once, then loaded without workers); 0: read every
    #: sample from its file.
    chip_memory: int = 1024
    #: Lightning logger beside ``metrics.csv``: none, csv, tensorboard or mlflow.
    logger: str = 'none'
    seed: int = 0

    def __post_init__(self) -> None:
        """Normalise types that YAML cannot tell apart and check the choices.

        Raises:
            ConfigError: If the task, split, class weighting or position embedding
                is unknown, or the logger's package is missing.
        """
        self.images = [str(p) for p in _as_list(self.images)]
        self.labels = [str(p) for p in _as_list(self.labels)]
        self.out = str(self.out)
        if self.task not in ('classify', 'segment', 'detect'):
            msg = f"task must be 'classify', 'segment' or 'detect', got {self.task!r}"
            raise ConfigError(msg)
        if self.class_weights not in CLASS_WEIGHTS:
            msg = (
                f'--class-weights must be one of {", ".join(CLASS_WEIGHTS)}, got '
                f'{self.class_weights!r}'
            )
            raise ConfigError(msg)
        if self.pos_embed not in POS_EMBEDS:
            msg = (
                f'--pos-embed must be one of {", ".join(POS_EMBEDS)}, got '
                f'{self.pos_embed!r}'
            )
            raise ConfigError(msg)
        if not 0 <= self.label_smoothing < 1:
            msg = f'--label-smoothing must lie in [0, 1), got {self.label_smoothing}'
            raise ConfigError(msg)
        if not 0 <= self.random_erase <= 1:
            msg = f'--random-erase must lie in [0, 1], got {self.random_erase}'
            raise ConfigError(msg)
        check_logger(self.logger)
        parse_split(self.split)
        fraction = self.label_fraction
        if fraction is not None and not 0 < fraction <= 1:
            msg = f'--label-fraction must be in (0, 1], got {fraction}'
            raise ConfigError(msg)
        if isinstance(self.devices, str) and self.devices.isdigit():
            self.devices = int(self.devices)
        if self.steps is None and self.epochs is None:
            self.epochs = 50
        overlap, size = self.tile_overlap, self.image_size
        if overlap is not None and size is not None and not 0 <= overlap < size:
            msg = (
                f'--tile-overlap must lie in [0, --image-size), got {overlap} for '
                f'{size} px tiles'
            )
            raise ConfigError(msg)


def _typed(key: str, value: Any, hint: Any) -> Any:
    """*value* of configuration *key* checked against its field's type *hint*.

    Raises:
        ConfigError: If it is not of that type, naming the key.
    """
    try:
        return _conform(value, hint)
    except TypeError:
        msg = f'configuration key {key!r} must be {_describe(hint)}, got {value!r}'
        raise ConfigError(msg) from None


def _conform(value: Any, hint: Any) -> Any:
    """*value* as of type *hint* (a type of the configuration fields).

    Raises:
        TypeError: If *value* is not of that type.
    """
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if origin is UnionType:
        for option in args:
            try:
                return _conform(value, option)
            except TypeError:
                continue
        raise TypeError
    if origin is Literal:
        if value in args:
            return value
        raise TypeError
    if hint is type(None):
        if value is None:
            return None
        raise TypeError
    if origin is list:
        if isinstance(value, str | os.PathLike):
            value = [value]
        if not isinstance(value, list | tuple):
            raise TypeError
        return [_conform(item, args[0]) for item in value]
    if origin is tuple:
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise TypeError
        return tuple(_conform(item, arg) for item, arg in zip(value, args, strict=True))
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise TypeError
        return value
    if isinstance(value, bool) and hint is not bool:
        raise TypeError  # YAML's true is no number
    if hint is float and isinstance(value, int):
        return float(value)
    if hint is str and isinstance(value, os.PathLike):
        return str(value)
    if isinstance(value, hint):
        return value
    raise TypeError


def _describe(hint: Any) -> str:
    """The type *hint* in words, for error messages."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is UnionType:
        return ' or '.join(_describe(arg) for arg in args)
    if origin is Literal:
        return 'one of ' + ', '.join(repr(arg) for arg in args)
    if origin is list:
        return f'a list of {_describe(args[0])}'
    if origin is tuple:
        return f'a list of {len(args)} ({", ".join(_describe(a) for a in args)})'
    if origin is dict:
        return 'a mapping of names to values'
    words = {
        str: 'text',
        int: 'an integer',
        float: 'a number',
        bool: 'true or false',
        type(None): 'null',
    }
    return words.get(hint, str(hint))


def _as_list(value: Any) -> list[Any]:
    """*value* as a list: None is empty, a string is one item."""
    if value is None:
        return []
    if isinstance(value, str | os.PathLike):
        return [value]
    return list(value)


def parse_split(text: str, seed: int = 0) -> SplitSpec | Literal['auto'] | None:
    """Read a split as written on the command line.

    Args:
        text: ``auto`` (split folders, else a split column, else spatial blocks or
            random), ``none`` (everything trains), ``folder``, ``column:NAME``,
            ``blocks`` or ``blocks:SIZE`` (block side in CRS units), ``random``.
        seed: seed of block and random draws.

    Returns:
        what :func:`~dspt_geo.data.labels.open_labelled` takes as ``split``.

    Raises:
        ConfigError: If *text* is not one of these.
    """
    name, sep, argument = str(text).partition(':')
    name, argument = name.strip().lower(), argument.strip()
    try:
        match name:
            case 'auto' if not sep:
                return 'auto'
            case 'none' if not sep:
                return None
            case 'folder' | 'folders' if not sep:
                return FolderSplit()
            case 'column' if argument:
                return ColumnSplit(argument)
            case 'blocks' | 'block':
                size = float(argument) if argument else None
                return BlockSplit(size=size, seed=seed)
            case 'random' if not sep:
                return RandomSplit(seed=seed)
    except ValueError as error:
        msg = f'split {text!r}: {error}'
        raise ConfigError(msg) from error
    msg = (
        f'unknown split {text!r}; use auto, none, folder, column:NAME, blocks, '
        'blocks:SIZE (in CRS units) or random'
    )
    raise ConfigError(msg)
