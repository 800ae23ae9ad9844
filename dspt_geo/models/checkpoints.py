"""Reading weight files safely: local paths, cached timm names, no pickled code.

:func:`resolve_weights` finds the file of a ``--init`` value (a path, or a timm name
with a pretrained tag read from the local Hugging Face cache only; no network is
used); :func:`read_weights` reads its tensors: safetensors files (dspt-geo model
files with their metadata), and PyTorch checkpoints under ``weights_only=True``.
Checkpoints of the MAE and CSPT reference code pickle their ``argparse.Namespace``
of settings under ``args``: that one class is allowed to the safe unpickler; any
other Python object is refused unrun, with how to convert a trusted file. The
weights may be nested (``{'model': ...}``, ``{'state_dict': ...}``): the dict that
holds a ViT encoder is found by its :data:`VIT_ANCHOR` tensor.
:mod:`dspt_geo.models.weights` maps the keys to the model's layout.
"""

import argparse
import os
import pickle
import pickletools
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import try_to_load_from_cache
from safetensors import SafetensorError, safe_open
from torch import Tensor

from ..errors import CheckpointError
from .model_file import METADATA_KEY, load_model_file

__all__ = ('CHECKPOINT_GROUP', 'VIT_ANCHOR', 'read_weights', 'resolve_weights')

#: Tensor of every ViT encoder, whose key locates the encoder in a checkpoint.
VIT_ANCHOR = 'blocks.0.norm1.weight'

#: Source-group name of a checkpoint with a single stem (not a dspt-geo file).
CHECKPOINT_GROUP = 'checkpoint'

#: Pickle opcodes that import or call Python objects.
_CODE_OPCODES = frozenset({'GLOBAL', 'STACK_GLOBAL', 'INST', 'OBJ', 'REDUCE', 'NEWOBJ'})

#: Classes that the safe unpickler may rebuild besides tensors and containers: the
#: reference MAE and CSPT code saves its ``argparse.Namespace`` under ``args``, whose
#: rebuilding sets attributes only and runs no code (issue 11).
_SAFE_GLOBALS: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [
    argparse.Namespace
]


def resolve_weights(source: str | os.PathLike[str]) -> Path:
    """Find the weights file of a path or a cached timm name.

    Args:
        source: A weights file, or a timm name with a pretrained tag whose weights
            are in the local Hugging Face cache.

    Returns:
        The file.

    Raises:
        CheckpointError: If there is no such file, or the name's weights are not
            cached (no network is used).
    """
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


def read_weights(path: Path) -> tuple[dict[str, Tensor], dict[str, Any] | None, str]:
    """Read the tensors of a weights file without running pickled code.

    Args:
        path: A PyTorch checkpoint (zip or plain pickle) or a safetensors file.

    Returns:
        The state dict that holds a ViT encoder (found by its
        ``blocks.0.norm1.weight``, however deeply nested), the dspt-geo metadata of
        a model file (else None), and where in a checkpoint the state dict was
        (``"['model']"``; empty at the top).

    Raises:
        CheckpointError: If the file is empty, not a weights file, corrupt, holds
            pickled code other than ``argparse.Namespace``, or no ViT weights.
    """
    with path.open('rb') as file:
        head = file.read(9)
    if not head:
        raise CheckpointError(f'{path} is empty, not a weights file')
    if head.startswith((b'PK', b'\x80')):
        found = _find_state_dict(_torch_load(path, zipped=head.startswith(b'PK')))
        if found is None:
            raise CheckpointError(
                f'{path} holds no ViT weights (no tensor named like {VIT_ANCHOR!r})'
            )
        tensors, where = found
        return tensors, None, where
    if head[8:9] == b'{':
        tensors, metadata = _read_safetensors(path)
        return tensors, metadata, ''
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
    if any(key.endswith(VIT_ANCHOR) for key in tensors):
        return tensors, where
    for key, value in obj.items():
        found = _find_state_dict(value, f'{where}[{key!r}]')
        if found is not None:
            return found
    return None
