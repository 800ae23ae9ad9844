"""Encoders to probe: model files, run checkpoints, or the same ViT at random init.

A probe compares frozen encoders on equal terms, so every source becomes a
:class:`ProbeEncoder`: the :class:`~dspt_geo.models.SensorEncoder`, the
normalisation it was trained with (None where it brings none: the labelled data's
own is used) and a fingerprint that keys its cached features.
"""

import hashlib
import json
import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from ..data.statistics import BandStatistics
from ..errors import CheckpointError
from ..models import SensorEncoder, build_encoder, load_finetuned
from ..models.model_file import read_metadata

__all__ = (
    'RANDOM',
    'ProbeEncoder',
    'encoder_image_size',
    'load_probe_encoder',
    'random_encoder',
)

logger = logging.getLogger(__name__)

#: The encoder source that means "the same architecture at random initialisation".
RANDOM = 'random'

#: What a probe reads, for messages.
_KINDS = (
    'a pretrained.safetensors (dspt-geo pretrain), a model.safetensors (dspt-geo '
    "finetune), a run's Lightning checkpoint (RUN_DIR/checkpoints/*.ckpt) or random"
)


@dataclass
class ProbeEncoder:
    """A frozen encoder ready to embed chips.

    Attributes:
        name: how tables and plots name it (the source as given).
        encoder: the encoder, in eval mode.
        statistics: the normalisation it was trained with, or None.
        fingerprint: identifies the weights (a hash of the file, or of the random
            architecture and seed).
        image_size: the image size it was trained at.
    """

    name: str
    encoder: SensorEncoder
    statistics: BandStatistics | None
    fingerprint: str
    image_size: int


def encoder_image_size(source: str | os.PathLike[str]) -> int:
    """The image size an encoder file was trained at, read without building it.

    Raises:
        CheckpointError: If *source* is not an encoder a probe reads.
    """
    kind, info = _inspect(Path(source))
    match kind:
        case 'mae-pretrained':
            return int(info['model']['image_size'])
        case 'finetuned':
            return int(info['tile']['size'])
        case _:
            return int(info['image_size'])


def load_probe_encoder(
    source: str | os.PathLike[str], bands: tuple[str, ...]
) -> ProbeEncoder:
    """Load an encoder from a model file or a pre-training run's checkpoint.

    Args:
        source: ``pretrained.safetensors``, ``model.safetensors`` or a ``.ckpt`` of
            a ``dspt-geo pretrain`` run.
        bands: the labelled images' bands (they pick the sensor group's stem, and
            adapt it where the counts differ).

    Returns:
        the encoder, frozen and in eval mode.

    Raises:
        CheckpointError: If *source* is not one of these.
    """
    path = Path(source)
    kind, info = _inspect(path)
    statistics: BandStatistics | None = None
    if kind == 'finetuned':
        model, metadata = load_finetuned(path)
        encoder = getattr(model, 'encoder', None)
        if not isinstance(encoder, SensorEncoder):
            msg = f'{path}: the fine-tuned model holds no ViT encoder'
            raise CheckpointError(msg)
        statistics = BandStatistics.from_dict(metadata['sensor']['statistics'])
        image_size = int(metadata['tile']['size'])
    else:
        if kind == 'mae-pretrained':
            model_info = info['model']
            groups = {
                name: list(entry.get('bands') or [])
                for name, entry in info['sensors'].items()
            }
            stats = {
                name: BandStatistics.from_dict(entry['statistics'])
                for name, entry in info['sensors'].items()
                if entry.get('statistics')
            }
        else:  # a run's Lightning checkpoint
            model_info = info
            groups = {name: list(b) for name, b in info['sensors'].items()}
            stats = _run_statistics(path, groups)
        sensor = _pick_group(groups, bands)
        image_size = int(model_info['image_size'])
        encoder, _ = build_encoder(
            str(model_info['name']),
            len(bands),
            sensor=sensor,
            bands=bands,
            init=path,
            image_size=image_size,
            patch_size=int(model_info['patch_size']),
            model_args=model_info.get('model_args') or {},
        )
        if len(groups[sensor]) == len(bands):
            statistics = stats.get(sensor)
    if statistics is not None and len(statistics.mean) != len(bands):
        statistics = None
    encoder.eval().requires_grad_(False)
    return ProbeEncoder(str(source), encoder, statistics, _hash_file(path), image_size)


def random_encoder(like: SensorEncoder, seed: int = 0) -> ProbeEncoder:
    """The architecture of *like* at random initialisation: the probe's baseline.

    Args:
        like: an encoder with a spec (every loaded encoder has one).
        seed: seed of the initialisation.

    Returns:
        the encoder, frozen and in eval mode, without statistics of its own.
    """
    spec = like.spec
    assert spec is not None  # loaded encoders always carry their spec
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        encoder = SensorEncoder.from_spec(spec)
    finally:
        torch.random.set_rng_state(state)
    encoder.eval().requires_grad_(False)
    text = json.dumps({'spec': spec.to_dict(), 'seed': seed}, sort_keys=True)
    fingerprint = hashlib.sha256(text.encode()).hexdigest()[:16]
    return ProbeEncoder(RANDOM, encoder, None, fingerprint, spec.image_size)


def _inspect(path: Path) -> tuple[str, dict[str, Any]]:
    """The kind of encoder file and its description (metadata or hyperparameters)."""
    if not path.is_file():
        msg = f'encoder {path} does not exist; give {_KINDS}'
        raise CheckpointError(msg)
    metadata = read_metadata(path)
    if metadata is not None:
        kind = str(metadata.get('kind'))
        if kind in ('mae-pretrained', 'finetuned'):
            return kind, metadata
        msg = f'{path} is a model file of kind {kind!r}; give {_KINDS}'
        raise CheckpointError(msg)
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except (
        pickle.UnpicklingError,
        SafetensorError,
        RuntimeError,
        EOFError,
        ValueError,
        OSError,
    ) as error:
        msg = f'{path} is not an encoder a probe reads ({error}); give {_KINDS}'
        raise CheckpointError(msg) from None
    hparams = state.get('hyper_parameters') if isinstance(state, dict) else None
    if not isinstance(hparams, dict) or 'sensors' not in hparams:
        msg = f'{path} is not a dspt-geo pretrain checkpoint; give {_KINDS}'
        raise CheckpointError(msg)
    info = {
        'name': hparams['model'],
        'model_args': hparams.get('model_args') or {},
        'image_size': hparams['image_size'],
        'patch_size': hparams.get('patch_size') or _patch_size(state),
        'sensors': hparams['sensors'],
    }
    return 'checkpoint', info


def _patch_size(state: dict[str, Any]) -> int:
    """Patch size of a checkpoint's first stem (its kernel size)."""
    for key, value in state['state_dict'].items():
        if key.endswith('proj.weight') and 'patch_embed' in key:
            return int(value.shape[-1])
    msg = 'the checkpoint holds no patch embedding'
    raise CheckpointError(msg)


def _pick_group(groups: dict[str, list[str]], bands: tuple[str, ...]) -> str:
    """The sensor group whose stem fits *bands*: same bands, else same count."""
    for name, group_bands in groups.items():
        if tuple(group_bands) == bands:
            return name
    for name, group_bands in groups.items():
        if len(group_bands) == len(bands):
            return name
    name = next(iter(groups))
    logger.warning(
        'no sensor group of the encoder has the %d bands of the labelled images; '
        'adapting the stem of group %r (%d bands)',
        len(bands),
        name,
        len(groups[name]),
    )
    return name


def _run_statistics(
    checkpoint: Path, groups: dict[str, list[str]]
) -> dict[str, BandStatistics]:
    """Normalisation statistics in the run folder of a checkpoint, by group."""
    found: dict[str, BandStatistics] = {}
    for path in sorted((checkpoint.parent.parent / 'stats').glob('*.json')):
        try:
            stats = BandStatistics.from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError, OSError):
            continue
        for name, bands in groups.items():
            if list(getattr(stats, 'bands', None) or []) == bands:
                found[name] = stats
    return found


def _hash_file(path: Path) -> str:
    """First 16 hex digits of the file's SHA-256."""
    digest = hashlib.sha256()
    with path.open('rb') as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:16]
