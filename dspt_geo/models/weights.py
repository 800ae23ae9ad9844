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

The file is found and read by :mod:`dspt_geo.models.checkpoints` (safely, offline);
here its keys are mapped to the model's layout: a key prefix (``model.``,
``encoder.``, ``backbone.``, ``module.``) is removed, the encoder being found by its
``blocks.0.norm1.weight`` tensor.

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

The patch-embedding stem and the reconstruction head of every sensor group are
adapted to its bands by the rules of :mod:`dspt_geo.models.bands`.
"""

import dataclasses
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..errors import CheckpointError
from .bands import (
    CHECKPOINT_BANDS,
    adapt_head,
    adapt_patch_embed,
    band_mapping,
    describe_mapping,
)
from .checkpoints import CHECKPOINT_GROUP, VIT_ANCHOR, read_weights, resolve_weights
from .mae import MaskedAutoencoder
from .pos_embed import sincos_pos_embed_2d
from .weight_fit import architecture_problems, mismatch_message

if TYPE_CHECKING:  # encoder.py imports this module
    from .encoder import SensorEncoder

__all__ = (
    'CheckpointWeights',
    'LoadReport',
    'checkpoint_filter_fn',
    'load_init_weights',
)

logger = logging.getLogger(__name__)

#: Logger of the weight-load report; the CLI shows it at normal verbosity.
report_logger = logging.getLogger(f'{__name__}.report')


#: Key of a ViT checkpoint's stem and reconstruction head, without their prefix.
_VIT_STEM, _VIT_HEAD = 'patch_embed.', 'decoder_pred.'

#: Keys of a ViT checkpoint that belong to the encoder, as prefixes.
_ENCODER_KEYS = ('cls_token', 'reg_token', 'blocks.', 'norm.', 'norm_pre.', 'fc_norm.')


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
class CheckpointWeights:
    """Weights brought to the layout of :class:`MaskedAutoencoder`.

    What :func:`checkpoint_filter_fn` makes of a source checkpoint; loading adapts
    the stems and heads to the model's bands and resamples the position embedding.

    .. versionadded:: 0.1
    """

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
    model: 'MaskedAutoencoder | SensorEncoder',
    source: str | os.PathLike[str],
    *,
    sensor_bands: Mapping[str, Sequence[str] | None] | None = None,
    encoder_only: bool = False,
    log: bool = True,
) -> LoadReport:
    """Load starting weights into a freshly initialised model.

    The model is a :class:`MaskedAutoencoder` (pre-training) or the
    :class:`~dspt_geo.models.SensorEncoder` of one sensor group (fine-tuning): the
    checkpoint is mapped to the autoencoder's key names by one filter, and an
    encoder takes the encoder's part of it in its own names (its decoder and
    reconstruction heads are left out, as with *encoder_only*).

    Tensors of the shared encoder and decoder are loaded as they are; an
    architecture that differs (width, depth, patch size) is an error. The stem and
    head of every sensor group come from the checkpoint's (in a dspt-geo file, from
    the group of the same name, else from the one whose bands fit best), adapted to
    the group's bands by the rules of :mod:`dspt_geo.models.bands`. A foreign
    checkpoint's bands are assumed from its band count (:data:`CHECKPOINT_BANDS`).

    Args:
        model: The model to fill, as constructed (an encoder's sensor group is
            its ``spec.sensor``).
        source: A weights file, a timm name with a pretrained tag whose weights are
            in the local Hugging Face cache, or ``'none'`` to keep the random
            initialisation.
        sensor_bands: Band names of the model's sensor groups, in input order;
            groups left out or None have unknown bands (for an encoder, its
            group's, else its ``spec.bands``).
        encoder_only: Load the encoder and stems only, leaving out the checkpoint's
            decoder and reconstruction heads, whatever their size (for fine-tuning,
            which discards the decoder).
        log: Log the report (on :data:`report_logger`, at INFO).

    Returns:
        What was loaded, left out and adapted, in the model's key names.

    Raises:
        CheckpointError: If the weights are missing, unsafe (pickled code), corrupt,
            or do not fit the model's architecture.
        ValueError: If *sensor_bands* does not fit the model's sensor groups.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       Added *log*; a learned position embedding is resampled and loaded; *model*
       may be a ``SensorEncoder`` (issue 10).
    """
    view = (
        None
        if isinstance(model, MaskedAutoencoder)
        else _EncoderView(model, sensor_bands)
    )
    target: Any = model if view is None else view
    bands = _check_sensor_bands(
        target, sensor_bands if view is None else view.sensor_bands
    )
    if isinstance(source, str) and source.lower() == 'none':
        report = LoadReport(
            source='none', format='none', missing=list(target.state_dict())
        )
    else:
        path = resolve_weights(source)
        tensors, metadata, where = read_weights(path)
        checkpoint = checkpoint_filter_fn(path, tensors, metadata)
        if where:
            checkpoint.notes.insert(0, f'weights found under {where}')
        if encoder_only or view is not None:
            checkpoint = _without_decoder(checkpoint)
        report = _apply(target, checkpoint, bands, path)
    if view is not None:
        report = view.own_names(report)
    if log:
        report_logger.info('%s', report)
    return report


class _EncoderView:
    """A :class:`SensorEncoder` in the key names of a one-group autoencoder.

    It has what loading reads of a :class:`MaskedAutoencoder` (its sensor group,
    patch size, width, state dict, position embedding), with ``encoder.blocks.*``
    for the encoder's ``blocks.*`` and ``patch_embed.<group>.*`` for its
    ``patch_embed.*``, so one filter and one loader serve both.
    """

    def __init__(
        self,
        encoder: 'SensorEncoder',
        sensor_bands: Mapping[str, Sequence[str] | None] | None,
    ) -> None:
        spec = encoder.spec
        names = list(sensor_bands or {})
        if len(names) > 1:
            raise ValueError(f'an encoder has one sensor group, got {names}')
        self.group = names[0] if names else spec.sensor if spec else 'image'
        bands = (sensor_bands or {}).get(self.group, spec.bands if spec else None)
        self.sensor_bands = {self.group: bands}
        self.sensors = {self.group: encoder.in_chans}
        self.patch_size = encoder.patch_size
        self.embed_dim = encoder.embed_dim
        self.decoder_embed_dim = 0  # no decoder: heads are never loaded
        self.patch_embed = {self.group: encoder.patch_embed}
        self.encoder = encoder

    def _wide(self, key: str) -> str:
        stem = 'patch_embed.'
        if key.startswith(stem):
            return f'{stem}{self.group}.{key.removeprefix(stem)}'
        return f'encoder.{key}'

    def _own(self, key: str) -> str | None:
        stem = f'patch_embed.{self.group}.'
        if key.startswith(stem):
            return 'patch_embed.' + key.removeprefix(stem)
        return key.removeprefix('encoder.') if key.startswith('encoder.') else None

    def state_dict(self) -> dict[str, Tensor]:
        return {self._wide(k): v for k, v in self.encoder.state_dict().items()}

    def load_state_dict(self, tensors: Mapping[str, Tensor], strict: bool) -> None:
        own = {self._own(key): value for key, value in tensors.items()}
        self.encoder.load_state_dict(
            {k: v for k, v in own.items() if k is not None}, strict=strict
        )

    def learn_pos_embed(self, pos_embed: Tensor) -> None:
        self.encoder.learn_pos_embed(pos_embed)

    def own_names(self, report: LoadReport) -> LoadReport:
        """The report with the encoder's key names."""

        def keep(keys: list[str]) -> list[str]:
            return [name for name in map(self._own, keys) if name is not None]

        return dataclasses.replace(
            report, loaded=keep(report.loaded), missing=keep(report.missing)
        )


def _without_decoder(checkpoint: CheckpointWeights) -> CheckpointWeights:
    """The checkpoint without its decoder, mask token and reconstruction heads."""
    decoder = [key for key in checkpoint.tensors if key.startswith(_DECODER_PREFIXES)]
    notes = list(checkpoint.notes)
    if decoder or checkpoint.heads:
        notes.append('decoder weights not used: the encoder only is loaded')
    return CheckpointWeights(
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


def _prefixes(keys: Sequence[str], anchor: str) -> list[str]:
    """Key prefixes (``''`` or ending in a dot) under which *anchor* occurs."""
    found = {key[: -len(anchor)] for key in keys if key.endswith(anchor)}
    return sorted(prefix for prefix in found if not prefix or prefix.endswith('.'))


def checkpoint_filter_fn(
    path: Path, tensors: dict[str, Tensor], metadata: dict[str, Any] | None
) -> CheckpointWeights:
    """Map a source checkpoint's keys to the autoencoder's layout (timm's filter).

    The one key filter of pre-training and fine-tuning alike (issue 10): a prefix
    (``model.``, ``encoder.``, ``backbone.``, ``module.``) is removed; ViT and MAE
    keys are renamed (``blocks.*`` to ``encoder.blocks.*``, the stem and
    reconstruction head set apart as one source group); a dspt-geo file's stems
    and heads are split by sensor group with their band names; a learned position
    embedding is kept for resampling and a sin-cos one dropped (the model computes
    it).

    Args:
        path: The file, named in error messages.
        tensors: Its state dict (see :func:`~dspt_geo.models.checkpoints.read_weights`).
        metadata: A dspt-geo model file's metadata (its ``sensors``), else None.

    Returns:
        The weights in the autoencoder's layout, with notes on what was changed.

    Raises:
        CheckpointError: If the tensors hold no ViT encoder, or several.

    .. versionadded:: 0.1
    """
    keys = list(tensors)
    prefixes = [
        prefix
        for prefix in _prefixes(keys, f'encoder.{VIT_ANCHOR}')
        if any(
            re.match(rf'{re.escape(prefix)}patch_embed\.[^.]+\.proj\.', k) for k in keys
        )
    ]
    layout = 'dspt-geo'
    if not prefixes:
        layout, prefixes = 'vit', _prefixes(keys, VIT_ANCHOR)
    if len(prefixes) != 1:
        raise CheckpointError(
            f'{path} holds no ViT encoder (no tensor named like {VIT_ANCHOR!r})'
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
) -> CheckpointWeights:
    """Split a state dict in the MaskedAutoencoder layout by sensor group."""
    checkpoint = CheckpointWeights('dspt-geo', {}, {}, {}, {}, notes)
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


def _convert_vit(tensors: dict[str, Tensor], notes: list[str]) -> CheckpointWeights:
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
    return CheckpointWeights(
        format='mae' if 'mask_token' in shared or head else 'vit',
        tensors=shared,
        stems={CHECKPOINT_GROUP: stem} if stem else {},
        heads={CHECKPOINT_GROUP: head} if head else {},
        bands={CHECKPOINT_GROUP: bands},
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
    checkpoint: CheckpointWeights,
    bands: dict[str, Sequence[str] | None],
    path: Path,
) -> LoadReport:
    """Check, adapt and load converted weights into the model."""
    target = model.state_dict()
    problems = architecture_problems(model, target, checkpoint)
    if problems:
        raise CheckpointError(mismatch_message(path, problems, checkpoint))
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
    checkpoint: CheckpointWeights,
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
    origin = '' if source in (group, CHECKPOINT_GROUP) else f' (from {source!r})'
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


def _count(stem: dict[str, Tensor]) -> int:
    """Number of input bands of a checkpoint stem."""
    return stem['proj.weight'].shape[1]


def _pick_source(
    checkpoint: CheckpointWeights,
    group: str,
    bands: Sequence[str] | None,
    in_chans: int,
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
