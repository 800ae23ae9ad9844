"""Starting weights (``--init``) for a :class:`MaskedAutoencoder`, from local files.

:func:`load_init_weights` reads, without ever running pickled code:

* ``'mae'``: an official MAE checkpoint with its decoder (``*_full.pth``,
  ``mae_visualize_*.pth``);
* ``'vit'``: ViT encoder weights in MAE/timm key names: MAE's encoder-only
  ``mae_pretrain_vit_*.pth``, timm ``.pth``/``.bin``/``.safetensors`` files, torchgeo
  and SSL4EO-S12 ViTs (13-band Sentinel-2, 2-band Sentinel-1);
* ``'dspt-geo'``: a model file written by
  :func:`dspt_geo.models.model_file.save_model_file` (or a state dict in the
  :class:`MaskedAutoencoder` layout), to continue training.

The weights may be nested in a checkpoint (``{'model': ...}``, ``{'state_dict':
...}``) and their keys may carry a prefix (``model.``, ``encoder.``, ``backbone.``,
``module.``): the encoder is found by its ``blocks.0.norm1.weight`` tensor. A timm
name with a pretrained tag (``vit_base_patch16_224.mae``) is read from the local
Hugging Face cache only; no network is used.

Position embeddings (issue 11): the model computes fixed 2-D sin-cos embeddings
for the grid of every batch, so a checkpoint's sin-cos ``pos_embed`` (MAE
pre-training) is not loaded: the model computes the same. A *learned* encoder
``pos_embed`` (supervised timm ViTs, fine-tuned MAE checkpoints, a dspt-geo file
that kept one) is what the checkpoint's blocks were trained with, so it is loaded:
the encoder switches to a learned embedding
(:meth:`~dspt_geo.models.MaskedAutoencoder.learn_pos_embed`), resampled to the
model's grid with timm's ``resample_abs_pos_embed`` and to every batch's grid as it
runs. A checkpoint's ``decoder_pos_embed`` is dropped, with the reason: the decoder
always uses sin-cos (MAE's are sin-cos too).

Checkpoints of the MAE and CSPT reference code pickle their ``argparse.Namespace``
of settings under ``args``: that one class is allowed to the safe unpickler
(``weights_only=True``); any other Python object is still refused unrun.

The patch-embedding stem and the reconstruction head of every sensor group are
adapted to its bands by the rules of :mod:`dspt_geo.models.bands`.
"""

import argparse
import logging
import math
import os
import pickle
import pickletools
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import try_to_load_from_cache
from safetensors import SafetensorError, safe_open
from torch import Tensor

from ..errors import CheckpointError
from .bands import (
    CHECKPOINT_BANDS,
    adapt_head,
    adapt_patch_embed,
    band_mapping,
    describe_mapping,
)
from .mae import MaskedAutoencoder
from .model_file import METADATA_KEY, load_model_file
from .pos_embed import sincos_pos_embed_2d

__all__ = ('LoadReport', 'load_init_weights')

logger = logging.getLogger(__name__)

#: Logger of the weight-load report; the CLI shows it at normal verbosity.
report_logger = logging.getLogger(f'{__name__}.report')

#: Tensor of every ViT encoder, whose key locates the encoder in a checkpoint.
_VIT_ANCHOR = 'blocks.0.norm1.weight'

#: Key of a ViT checkpoint's stem and reconstruction head, without their prefix.
_VIT_STEM, _VIT_HEAD = 'patch_embed.', 'decoder_pred.'

#: Keys of a ViT checkpoint that belong to the encoder, as prefixes.
_ENCODER_KEYS = ('cls_token', 'reg_token', 'blocks.', 'norm.', 'norm_pre.', 'fc_norm.')

#: Source-group name of a checkpoint with a single stem.
_CHECKPOINT_GROUP = 'checkpoint'

#: Sizes of the standard timm ViTs by (embed_dim, depth).
_VIT_SIZES = {
    (192, 12): 'tiny',
    (384, 12): 'small',
    (768, 12): 'base',
    (1024, 24): 'large',
    (1280, 32): 'huge',
}

#: Pickle opcodes that import or call Python objects.
_CODE_OPCODES = frozenset({'GLOBAL', 'STACK_GLOBAL', 'INST', 'OBJ', 'REDUCE', 'NEWOBJ'})

#: Classes that the safe unpickler may rebuild besides tensors and containers: the
#: reference MAE and CSPT code saves its ``argparse.Namespace`` under ``args``, whose
#: rebuilding sets attributes only and runs no code (issue 11).
_SAFE_GLOBALS: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [
    argparse.Namespace
]

#: Most architecture disagreements listed in an error message.
_MAX_PROBLEMS = 5


@dataclass
class LoadReport:
    """What :func:`load_init_weights` did.

    .. versionadded:: 0.1
    """

    #: The file read (for a timm name, its path in the cache), or ``'none'``.
    source: str
    #: ``'none'``, ``'mae'``, ``'vit'`` or ``'dspt-geo'`` (see :mod:`.weights`).
    format: str
    #: Keys of the model's state dict that were loaded.
    loaded: list[str] = field(default_factory=list)
    #: Keys of the model's state dict that keep their initialisation.
    missing: list[str] = field(default_factory=list)
    #: Keys of the file that the model has no use for.
    unexpected: list[str] = field(default_factory=list)
    #: What was changed on the way, one human-readable line each.
    adapted: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        """Summarise the report in a few lines."""
        if self.format == 'none':
            return (
                "no initial weights ('none'): the model keeps its random initialisation"
            )
        lines = [
            (
                f'initial weights from {self.source} ({self.format}): '
                f'{len(self.loaded)} tensors loaded'
            )
        ]
        if self.missing:
            lines.append(
                f'not in the file, kept initialised: {_summarise(self.missing)}'
            )
        if self.unexpected:
            lines.append(f'in the file but unused: {_summarise(self.unexpected)}')
        lines.extend(self.adapted)
        return '\n'.join(lines)


@dataclass
class _Checkpoint:
    """Weights brought to the layout of :class:`MaskedAutoencoder`."""

    format: str
    #: Tensors of the shared encoder and decoder, by model key.
    tensors: dict[str, Tensor]
    #: Stem tensors (``proj.weight``, ...) by source group.
    stems: dict[str, dict[str, Tensor]]
    #: Reconstruction-head tensors (``weight``, ``bias``) by source group.
    heads: dict[str, dict[str, Tensor]]
    #: Band names of every source group, where known.
    bands: dict[str, Sequence[str] | None]
    #: How the weights were found and converted.
    notes: list[str]
    #: The encoder's learned position embedding, if it learned one.
    pos_embed: Tensor | None = None


#: Keys of the MAE decoder in the model's layout.
_DECODER_PREFIXES = ('mask_token', 'decoder_embed.', 'decoder_blocks.', 'decoder_norm.')


def load_init_weights(
    model: MaskedAutoencoder,
    source: str | os.PathLike[str],
    *,
    sensor_bands: Mapping[str, Sequence[str] | None] | None = None,
    encoder_only: bool = False,
    log: bool = True,
) -> LoadReport:
    """Load starting weights into a freshly initialised model.

    Tensors of the shared encoder and decoder are loaded as they are; an
    architecture that differs (width, depth, patch size) is an error. The stem and
    head of every sensor group come from the checkpoint's (in a dspt-geo file, from
    the group of the same name, else from the one whose bands fit best), adapted to
    the group's bands by the rules of :mod:`dspt_geo.models.bands`. A foreign
    checkpoint's bands are assumed from its band count (:data:`CHECKPOINT_BANDS`).

    Args:
        model: The model to fill, as constructed.
        source: A weights file, a timm name with a pretrained tag whose weights are
            in the local Hugging Face cache, or ``'none'`` to keep the random
            initialisation.
        sensor_bands: Band names of the model's sensor groups, in input order;
            groups left out or None have unknown bands.
        encoder_only: Load the encoder and stems only, leaving out the checkpoint's
            decoder and reconstruction heads, whatever their size (for fine-tuning,
            which discards the decoder).
        log: Log the report (on :data:`report_logger`, at INFO).

    Returns:
        What was loaded, left out and adapted.

    Raises:
        CheckpointError: If the weights are missing, unsafe (pickled code), corrupt,
            or do not fit the model's architecture.
        ValueError: If *sensor_bands* does not fit the model's sensor groups.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       Added *log*; a learned position embedding is resampled and loaded.
    """
    bands = _check_sensor_bands(model, sensor_bands)
    if isinstance(source, str) and source.lower() == 'none':
        report = LoadReport(
            source='none', format='none', missing=list(model.state_dict())
        )
    else:
        path = _resolve(source)
        checkpoint = _read_checkpoint(path)
        if encoder_only:
            checkpoint = _without_decoder(checkpoint)
        report = _apply(model, checkpoint, bands, path)
    if log:
        report_logger.info('%s', report)
    return report


def _without_decoder(checkpoint: _Checkpoint) -> _Checkpoint:
    """The checkpoint without its decoder, mask token and reconstruction heads."""
    decoder = [key for key in checkpoint.tensors if key.startswith(_DECODER_PREFIXES)]
    notes = list(checkpoint.notes)
    if decoder or checkpoint.heads:
        notes.append('decoder weights not used: the encoder only is loaded')
    return _Checkpoint(
        checkpoint.format,
        {k: v for k, v in checkpoint.tensors.items() if k not in decoder},
        checkpoint.stems,
        {},
        checkpoint.bands,
        notes,
        checkpoint.pos_embed,
    )


def _check_sensor_bands(
    model: MaskedAutoencoder, sensor_bands: Mapping[str, Sequence[str] | None] | None
) -> dict[str, Sequence[str] | None]:
    """Validate band names against the model and complete them with None."""
    sensor_bands = sensor_bands or {}
    unknown = sorted(set(sensor_bands) - set(model.sensors))
    if unknown:
        raise ValueError(
            f'sensor_bands names groups {unknown} that the model lacks; it has '
            f'{list(model.sensors)}'
        )
    for group, bands in sensor_bands.items():
        if bands is not None and len(bands) != model.sensors[group]:
            raise ValueError(
                f'sensor group {group!r} has {model.sensors[group]} bands but '
                f'sensor_bands names {len(bands)}: {list(bands)}'
            )
    return {group: sensor_bands.get(group) for group in model.sensors}


def _resolve(source: str | os.PathLike[str]) -> Path:
    """Find the weights file of a path or a cached timm name."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.exists():
        raise CheckpointError(f'{path} is not a file; pass a weights file')
    name = os.fspath(source)
    if timm.is_model(name):
        return _cached_hub_file(name)
    raise CheckpointError(
        f'no such weights file: {path}; pass a .pth, .bin or .safetensors file, a timm '
        "name whose weights are in the local Hugging Face cache, or 'none'"
    )


def _cached_hub_file(name: str) -> Path:
    """Find the weights of a timm name in the local Hugging Face cache, offline."""
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError as error:
        raise CheckpointError(f'timm knows no weights {name!r}: {error}') from error
    if cfg is None or not cfg.hf_hub_id:
        raise CheckpointError(
            f'timm has no Hugging Face weights for {name!r}; download a weights file '
            'and pass its path'
        )
    repo_id, _, revision = cfg.hf_hub_id.partition('@')
    filenames = [cfg.hf_hub_filename] if cfg.hf_hub_filename else []
    for filename in [*filenames, 'model.safetensors', 'pytorch_model.bin']:
        cached = try_to_load_from_cache(repo_id, filename, revision=revision or None)
        if isinstance(cached, str):
            return Path(cached)
    raise CheckpointError(
        f'{name!r} ({repo_id}) is not in the local Hugging Face cache '
        f'({hf_constants.HF_HUB_CACHE}); no network is used: download the file and '
        'pass its path'
    )


def _read_checkpoint(path: Path) -> _Checkpoint:
    """Read a weights file and bring it to the model's layout."""
    with path.open('rb') as file:
        head = file.read(9)
    if not head:
        raise CheckpointError(f'{path} is empty, not a weights file')
    if head.startswith((b'PK', b'\x80')):
        found = _find_state_dict(_torch_load(path, zipped=head.startswith(b'PK')))
        if found is None:
            raise CheckpointError(
                f'{path} holds no ViT weights (no tensor named like {_VIT_ANCHOR!r})'
            )
        tensors, where = found
        checkpoint = _convert(path, tensors, metadata=None)
        if where:
            checkpoint.notes.insert(0, f'weights found under {where}')
        return checkpoint
    if head[8:9] == b'{':
        tensors, metadata = _read_safetensors(path)
        return _convert(path, tensors, metadata)
    raise CheckpointError(
        f'{path} is not a weights file (neither a PyTorch checkpoint nor safetensors)'
    )


def _torch_load(path: Path, *, zipped: bool) -> object:
    """Unpickle a checkpoint of tensors, containers and ``argparse.Namespace``."""
    try:
        with warnings.catch_warnings():
            # Plain pickles of another protocol warn before failing below.
            warnings.simplefilter('ignore', UserWarning)
            with torch.serialization.safe_globals(_SAFE_GLOBALS):
                return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r'Unsupported global: GLOBAL (\S+)', str(error))
        if found or (not zipped and _has_code(path)):
            what = found[1] if found else 'Python objects other than tensors'
            raise CheckpointError(
                f'{path} contains pickled code ({what}) and will not be loaded, as '
                'loading it could run that code. If you trust the file, convert it '
                'once: load it with torch.load(path, weights_only=False), save its '
                'state dict with safetensors.torch.save_file, and pass that file'
            ) from None
        raise CheckpointError(f'{path} is not a readable PyTorch checkpoint') from error
    except (RuntimeError, EOFError, ValueError, KeyError, IndexError) as error:
        raise CheckpointError(
            f'{path} is not a readable PyTorch checkpoint, it may be truncated or '
            f'corrupt: {error}'
        ) from error


def _has_code(path: Path) -> bool:
    """Whether a plain pickle imports or calls Python objects, read without running it."""
    with path.open('rb') as file:
        try:
            return any(
                op.name in _CODE_OPCODES for op, _, _ in pickletools.genops(file)
            )
        except ValueError:  # not a pickle after all
            return False


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """Read a safetensors file, and its dspt-geo metadata if it is a model file."""
    try:
        with safe_open(str(path), framework='pt') as file:
            if METADATA_KEY in (file.metadata() or {}):
                tensors = None
            else:
                tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118 (not a dict)
    except SafetensorError as error:
        raise CheckpointError(
            f'{path} is not a readable safetensors file, it may be truncated or '
            f'corrupt: {error}'
        ) from error
    if tensors is None:
        return load_model_file(path)
    return tensors, None


def _find_state_dict(
    obj: object, where: str = ''
) -> tuple[dict[str, Tensor], str] | None:
    """Find the (possibly nested) dict of tensors that holds a ViT encoder."""
    if not isinstance(obj, Mapping):
        return None
    tensors = {
        key: value
        for key, value in obj.items()
        if isinstance(key, str) and isinstance(value, Tensor)
    }
    if any(key.endswith(_VIT_ANCHOR) for key in tensors):
        return tensors, where
    for key, value in obj.items():
        found = _find_state_dict(value, f'{where}[{key!r}]')
        if found is not None:
            return found
    return None


def _prefixes(keys: Sequence[str], anchor: str) -> list[str]:
    """Key prefixes (``''`` or ending in a dot) under which *anchor* occurs."""
    found = {key[: -len(anchor)] for key in keys if key.endswith(anchor)}
    return sorted(prefix for prefix in found if not prefix or prefix.endswith('.'))


def _convert(
    path: Path, tensors: dict[str, Tensor], metadata: dict[str, Any] | None
) -> _Checkpoint:
    """Bring a state dict in the MaskedAutoencoder or ViT layout to the model's."""
    keys = list(tensors)
    prefixes = [
        prefix
        for prefix in _prefixes(keys, f'encoder.{_VIT_ANCHOR}')
        if any(
            re.match(rf'{re.escape(prefix)}patch_embed\.[^.]+\.proj\.', k) for k in keys
        )
    ]
    layout = 'dspt-geo'
    if not prefixes:
        layout, prefixes = 'vit', _prefixes(keys, _VIT_ANCHOR)
    if len(prefixes) != 1:
        raise CheckpointError(
            f'{path} holds no ViT encoder (no tensor named like {_VIT_ANCHOR!r})'
            if not prefixes
            else f'{path} holds several ViT encoders, under the key prefixes {prefixes}'
        )
    prefix = prefixes[0]
    tensors = {
        key[len(prefix) :]: value
        for key, value in tensors.items()
        if key.startswith(prefix)
    }
    notes = [f'key prefix {prefix!r} removed'] if prefix else []
    if layout == 'dspt-geo':
        return _convert_dspt(tensors, metadata, notes)
    return _convert_vit(tensors, notes)


def _convert_dspt(
    tensors: dict[str, Tensor], metadata: dict[str, Any] | None, notes: list[str]
) -> _Checkpoint:
    """Split a state dict in the MaskedAutoencoder layout by sensor group."""
    checkpoint = _Checkpoint('dspt-geo', {}, {}, {}, {}, notes)
    checkpoint.pos_embed = tensors.pop('encoder.pos_embed', None)
    for key, value in tensors.items():
        match = re.fullmatch(r'(patch_embed|decoder_pred)\.([^.]+)\.(.+)', key)
        if match is None:
            checkpoint.tensors[key] = value
            continue
        part = checkpoint.stems if match[1] == 'patch_embed' else checkpoint.heads
        part.setdefault(match[2], {})[match[3]] = value
    sensors = (metadata or {}).get('sensors')
    for group in checkpoint.stems:
        entry = sensors.get(group) if isinstance(sensors, dict) else None
        bands = entry.get('bands') if isinstance(entry, dict) else None
        named = isinstance(bands, list) and all(isinstance(band, str) for band in bands)
        checkpoint.bands[group] = bands if named else None
    return checkpoint


def _convert_vit(tensors: dict[str, Tensor], notes: list[str]) -> _Checkpoint:
    """Rename the keys of a ViT or MAE state dict to the model's layout."""
    shared: dict[str, Tensor] = {}
    stem: dict[str, Tensor] = {}
    head: dict[str, Tensor] = {}
    pos_embed = None
    for key, value in tensors.items():
        if key == 'pos_embed' and not _is_sincos(value):
            pos_embed = value
        elif key.startswith(_VIT_STEM):
            stem[key.removeprefix(_VIT_STEM)] = value
        elif key.startswith(_VIT_HEAD):
            head[key.removeprefix(_VIT_HEAD)] = value
        elif key in ('pos_embed', 'decoder_pos_embed'):
            notes.append(_pos_embed_note(key, value))
        elif key.startswith(_ENCODER_KEYS):
            shared[f'encoder.{key}'] = value
        else:
            shared[key] = value
    weight = stem.get('proj.weight')
    bands = CHECKPOINT_BANDS.get(weight.shape[1]) if weight is not None else None
    return _Checkpoint(
        format='mae' if 'mask_token' in shared or head else 'vit',
        tensors=shared,
        stems={_CHECKPOINT_GROUP: stem} if stem else {},
        heads={_CHECKPOINT_GROUP: head} if head else {},
        bands={_CHECKPOINT_GROUP: bands},
        notes=notes,
        pos_embed=pos_embed,
    )


def _pos_embed_note(key: str, pos_embed: Tensor) -> str:
    """Say why a position embedding is not loaded."""
    if _is_sincos(pos_embed):
        return f'{key}: not loaded, the model computes the same fixed 2-D sin-cos'
    return (
        f'{key}: learned embedding dropped, the decoder always uses fixed 2-D sin-cos'
    )


def _is_sincos(pos_embed: Tensor) -> bool:
    """Whether a position embedding is MAE's sin-cos of a square grid."""
    tokens, dim = pos_embed.shape[-2:]
    for prefix in (1, 0):
        grid = math.isqrt(max(tokens - prefix, 0))
        if grid and grid * grid == tokens - prefix and not dim % 4:
            expected = sincos_pos_embed_2d(dim, grid, cls_token=bool(prefix))
            if torch.allclose(
                pos_embed.reshape(tokens, dim).float(), expected, atol=1e-4
            ):
                return True
    return False


def _apply(
    model: MaskedAutoencoder,
    checkpoint: _Checkpoint,
    bands: dict[str, Sequence[str] | None],
    path: Path,
) -> LoadReport:
    """Check, adapt and load converted weights into the model."""
    target = model.state_dict()
    problems = _architecture_problems(model, target, checkpoint)
    if problems:
        raise CheckpointError(_mismatch_message(path, problems, checkpoint))
    adapted = list(checkpoint.notes)
    if checkpoint.pos_embed is not None:
        adapted.append(_load_pos_embed(model, checkpoint.pos_embed))
        target = model.state_dict()
    new = {key: value for key, value in checkpoint.tensors.items() if key in target}
    unexpected = [key for key in checkpoint.tensors if key not in target]
    used: set[str] = set()
    if checkpoint.stems:
        for group in model.sensors:
            used.add(_adapt_group(model, checkpoint, group, bands[group], new, adapted))
    unexpected += [
        f'patch_embed.{source}.*' for source in checkpoint.stems.keys() - used
    ]
    unexpected += [
        f'decoder_pred.{source}.*' for source in checkpoint.heads.keys() - used
    ]
    unexpected += [key for key in new if key not in target]
    new = {key: value for key, value in new.items() if key in target}
    model.load_state_dict(new, strict=False)
    loaded = set(new) | (
        {'encoder.pos_embed'} if checkpoint.pos_embed is not None else set()
    )
    return LoadReport(
        source=str(path),
        format=checkpoint.format,
        loaded=[key for key in target if key in loaded],
        missing=[key for key in target if key not in loaded],
        unexpected=unexpected,
        adapted=adapted,
    )


def _load_pos_embed(model: MaskedAutoencoder, pos_embed: Tensor) -> str:
    """Give the model the checkpoint's learned position embedding, resampled."""
    stem = next(iter(model.patch_embed.values()))
    grid = tuple(stem.grid_size)
    tokens = pos_embed.shape[1]
    side = math.isqrt(tokens - (0 if math.isqrt(tokens) ** 2 == tokens else 1))
    model.learn_pos_embed(pos_embed)
    how = (
        'loaded as it is'
        if (side, side) == grid
        else f'resampled from {side}x{side} to {grid[0]}x{grid[1]} patches (bicubic)'
    )
    return (
        f'encoder.pos_embed: learned, {how}; the encoder keeps a learned embedding, '
        "resampled to every batch's grid"
    )


def _adapt_group(
    model: MaskedAutoencoder,
    checkpoint: _Checkpoint,
    group: str,
    bands: Sequence[str] | None,
    new: dict[str, Tensor],
    adapted: list[str],
) -> str:
    """Adapt a checkpoint stem and head to a sensor group, into *new*.

    Returns:
        The source group that was used.
    """
    in_chans = model.sensors[group]
    source = _pick_source(checkpoint, group, bands, in_chans)
    stem = checkpoint.stems[source]
    source_bands, source_count = checkpoint.bands.get(source), _count(stem)
    mapping = band_mapping(source_bands, source_count, bands, in_chans)
    origin = '' if source in (group, _CHECKPOINT_GROUP) else f' (from {source!r})'
    how = describe_mapping(mapping, source_bands, bands, source_count, in_chans)
    adapted.append(f'{group}: patch embedding{origin}: {how}')
    for name, value in stem.items():
        if name == 'proj.weight':
            value = adapt_patch_embed(value, mapping, in_chans)
        new[f'patch_embed.{group}.{name}'] = value
    if source in checkpoint.heads:
        if mapping is None:
            adapted.append(
                f'{group}: reconstruction head kept initialised, no band matches'
            )
        else:
            initial = model.decoder_pred[group].state_dict()
            for name, value in checkpoint.heads[source].items():
                if name in initial:
                    new[f'decoder_pred.{group}.{name}'] = adapt_head(
                        value, initial[name], mapping
                    )
            matched = sum(i is not None for i in mapping)
            adapted.append(
                f'{group}: reconstruction head: {matched} of {in_chans} bands from the '
                'checkpoint, the others kept initialised'
            )
    return source


def _architecture_problems(
    model: MaskedAutoencoder, target: dict[str, Tensor], checkpoint: _Checkpoint
) -> list[str]:
    """List where the checkpoint's architecture disagrees with the model's."""
    p, width = model.patch_size, model.embed_dim
    problems = []
    for source, stem in checkpoint.stems.items():
        weight = stem.get('proj.weight')
        if weight is not None and (
            weight.ndim != 4 or weight.shape[0] != width or weight.shape[2:] != (p, p)
        ):
            problems.append(
                f'{_group_prefix("patch_embed", source)}proj.weight: file '
                f'{tuple(weight.shape)}, model ({width}, bands, {p}, {p})'
            )
    pos_embed = checkpoint.pos_embed
    if pos_embed is not None and (pos_embed.ndim != 3 or pos_embed.shape[-1] != width):
        problems.append(
            f'encoder.pos_embed: file {tuple(pos_embed.shape)}, model (1, tokens, {width})'
        )
    for prefix in ('encoder.blocks.', 'decoder_blocks.'):
        in_file = {key for key in checkpoint.tensors if key.startswith(prefix)}
        in_model = {key for key in target if key.startswith(prefix)}
        if in_file and in_file != in_model:
            depths = _depth(in_file, prefix), _depth(in_model, prefix)
            if depths[0] != depths[1]:
                problems.append(
                    f'{prefix[:-1]}: file depth {depths[0]}, model {depths[1]}'
                )
            else:
                other = sorted(in_file ^ in_model)
                problems.append(f'{prefix[:-1]}: other tensors, e.g. {other[0]}')
    problems += [
        f'{key}: file {tuple(value.shape)}, model {tuple(target[key].shape)}'
        for key, value in checkpoint.tensors.items()
        if key in target and value.shape != target[key].shape
    ]
    for source, head in checkpoint.heads.items():
        weight = head.get('weight')
        if weight is not None and (
            weight.ndim != 2
            or weight.shape[1] != model.decoder_embed_dim
            or weight.shape[0] % (p * p)
        ):
            problems.append(
                f'{_group_prefix("decoder_pred", source)}weight: file '
                f'{tuple(weight.shape)}, model ({p}*{p}*bands, {model.decoder_embed_dim})'
            )
    return problems


def _group_prefix(module: str, source: str) -> str:
    """Key prefix of a source group's stem or head, as the checkpoint names it."""
    return f'{module}.' if source == _CHECKPOINT_GROUP else f'{module}.{source}.'


def _mismatch_message(path: Path, problems: list[str], checkpoint: _Checkpoint) -> str:
    """Explain an architecture disagreement and name the settings that fit the file."""
    shown = problems[:_MAX_PROBLEMS]
    if len(problems) > _MAX_PROBLEMS:
        shown.append(f'and {len(problems) - _MAX_PROBLEMS} more')
    message = f'{path} does not fit the model: {"; ".join(shown)}.'
    if any(problem.startswith(('encoder.', 'patch_embed')) for problem in problems):
        message += f' {_describe_encoder(checkpoint)}'
    embed = checkpoint.tensors.get('decoder_embed.weight')
    if embed is not None and any(problem.startswith('decoder') for problem in problems):
        depth = _depth(checkpoint.tensors, 'decoder_blocks.')
        message += (
            f' Its decoder fits --decoder-dim {embed.shape[0]} --decoder-depth {depth}.'
        )
    return message


def _describe_encoder(checkpoint: _Checkpoint) -> str:
    """Name the ``--model`` that fits a checkpoint's encoder, or its dimensions."""
    width = checkpoint.tensors[f'encoder.{_VIT_ANCHOR}'].shape[0]
    depth = _depth(checkpoint.tensors, 'encoder.blocks.')
    patches = [stem['proj.weight'].shape[-1] for stem in checkpoint.stems.values()]
    dims = f'embed_dim {width}, depth {depth}'
    if not patches:
        return f'The file holds a ViT with {dims}: use a --model with these dimensions.'
    name = f'vit_{_VIT_SIZES.get((width, depth))}_patch{patches[0]}_224'
    fit = (
        f'--model {name}' if timm.is_model(name) else 'a --model with these dimensions'
    )
    return f'The file holds a ViT with {dims}, patch size {patches[0]}: use {fit}.'


def _depth(keys: Iterable[str], prefix: str) -> int:
    """Number of blocks among the keys ``<prefix><index>.*``."""
    indices = (
        int(key[len(prefix) :].split('.')[0]) for key in keys if key.startswith(prefix)
    )
    return 1 + max(indices, default=-1)


def _count(stem: dict[str, Tensor]) -> int:
    """Number of input bands of a checkpoint stem."""
    return stem['proj.weight'].shape[1]


def _pick_source(
    checkpoint: _Checkpoint, group: str, bands: Sequence[str] | None, in_chans: int
) -> str:
    """The checkpoint stem for a sensor group: same name, else the best band match."""
    if group in checkpoint.stems:
        return group

    def fit(source: str) -> tuple[int, bool]:
        count = _count(checkpoint.stems[source])
        mapping = (
            band_mapping(checkpoint.bands.get(source), count, bands, in_chans) or []
        )
        return sum(i is not None for i in mapping), count == in_chans

    return max(checkpoint.stems, key=fit)


def _summarise(keys: Sequence[str]) -> str:
    """Shorten a list of keys: numbered blocks become ``prefix.* (count)``."""
    counts: dict[str, int] = {}
    for key in keys:
        parts = key.split('.')
        index = next((i for i, part in enumerate(parts) if part.isdigit()), None)
        name = key if index is None else '.'.join(parts[:index]) + '.*'
        counts[name] = counts.get(name, 0) + 1
    return ', '.join(name if n == 1 else f'{name} ({n})' for name, n in counts.items())
