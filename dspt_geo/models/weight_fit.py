"""Whether a checkpoint's architecture fits the model, and what would fit it.

:func:`architecture_problems` lists where the weights that
:mod:`dspt_geo.models.weights` mapped to the model's layout disagree with the model
(width, depth, patch size, decoder), and :func:`mismatch_message` says so in one
error that names the ``--model`` (and decoder options) that fit the file.
"""

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import timm
from torch import Tensor

from .checkpoints import CHECKPOINT_GROUP, VIT_ANCHOR

if TYPE_CHECKING:  # weights.py imports this module
    from .mae import MaskedAutoencoder
    from .weights import CheckpointWeights

__all__ = ('architecture_problems', 'mismatch_message')

#: Sizes of the standard timm ViTs by (embed_dim, depth).
_VIT_SIZES = {
    (192, 12): 'tiny',
    (384, 12): 'small',
    (768, 12): 'base',
    (1024, 24): 'large',
    (1280, 32): 'huge',
}

#: Most architecture disagreements listed in an error message.
_MAX_PROBLEMS = 5


def architecture_problems(
    model: 'MaskedAutoencoder',
    target: dict[str, Tensor],
    checkpoint: 'CheckpointWeights',
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
    return f'{module}.' if source == CHECKPOINT_GROUP else f'{module}.{source}.'


def mismatch_message(
    path: Path, problems: list[str], checkpoint: 'CheckpointWeights'
) -> str:
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


def _describe_encoder(checkpoint: 'CheckpointWeights') -> str:
    """Name the ``--model`` that fits a checkpoint's encoder, or its dimensions."""
    width = checkpoint.tensors[f'encoder.{VIT_ANCHOR}'].shape[0]
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
