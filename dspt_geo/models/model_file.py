"""The dspt-geo model file: safetensors tensors with JSON metadata.

A model file holds a state dict and, in the safetensors header under the key
:data:`METADATA_KEY`, one JSON object that describes it. The object always has
``format_version`` (an integer, written by :func:`save_model_file`); the rest is
whatever the caller stores. :func:`dspt_geo.models.weights.load_init_weights` reads
``sensors``: ``{group: {'in_chans': int, 'bands': [str, ...] | null}}``.

safetensors files hold tensors and strings only, so loading one never runs code.
"""

import json
import os
import uuid
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import Tensor

from ..errors import CheckpointError

__all__ = (
    'FORMAT_VERSION',
    'METADATA_KEY',
    'load_model_file',
    'read_metadata',
    'save_model_file',
)

#: Key of the JSON metadata in the safetensors header.
METADATA_KEY = 'dspt_geo'

#: Version of the model file layout that this code writes and the newest it reads.
FORMAT_VERSION = 1


def save_model_file(
    path: str | os.PathLike[str],
    state_dict: dict[str, Tensor],
    metadata: dict[str, Any],
) -> None:
    """Write a model file atomically.

    The file is written to a temporary file in the same folder, flushed to disk and
    renamed over *path*, so a reader sees either the previous file or the new one.
    If writing fails, the temporary file is removed and a previous file is left
    intact.

    Args:
        path: Where to write the file, by convention ending in ``.safetensors``.
        state_dict: Tensors to store; tensors that share memory are stored apart.
        metadata: JSON-serialisable description of the model; ``format_version``
            is set on a copy.

    Raises:
        TypeError: If *metadata* is not JSON-serialisable.
        OSError: If the file cannot be written, e.g. the disk is full.

    .. versionadded:: 0.1
    """
    path = Path(path)
    header = {METADATA_KEY: json.dumps({**metadata, 'format_version': FORMAT_VERSION})}
    data = save(_unshared(state_dict), metadata=header)
    # Unlike tempfile's private files, a plain new file takes the umask's mode.
    temp = path.with_name(f'.{path.name}.{uuid.uuid4().hex}.tmp')
    try:
        with temp.open('xb') as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if os.name == 'posix':
        # Make the rename itself durable.
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def load_model_file(
    path: str | os.PathLike[str],
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a model file.

    Args:
        path: A file written by :func:`save_model_file`.

    Returns:
        The state dict (on the CPU) and the metadata.

    Raises:
        CheckpointError: If the file is missing, corrupt, not a dspt-geo model file,
            or written by a newer dspt-geo.

    .. versionadded:: 0.1
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'model file not found: {path}')
    try:
        with safe_open(str(path), framework='pt') as file:
            text = (file.metadata() or {}).get(METADATA_KEY)
            if text is None:
                raise CheckpointError(
                    f'{path} is a safetensors file but not a dspt-geo model file '
                    f'(no {METADATA_KEY!r} metadata)'
                )
            tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118 (not a dict)
    except SafetensorError as error:
        raise CheckpointError(
            f'{path} is not a readable model file, it may be truncated or corrupt: {error}'
        ) from error
    try:
        metadata = json.loads(text)
    except json.JSONDecodeError as error:
        raise CheckpointError(f'{path} has corrupt metadata: {error}') from error
    version = metadata.get('format_version') if isinstance(metadata, dict) else None
    if not isinstance(version, int):
        raise CheckpointError(f'{path} has no format_version in its metadata')
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f'{path} has model file format {version}; this dspt-geo reads up to '
            f'{FORMAT_VERSION}: update dspt-geo'
        )
    return tensors, metadata


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Read only the metadata of a model file, without its tensors.

    Args:
        path: any file.

    Returns:
        the metadata of a dspt-geo model file; None for anything else (another
        safetensors file, a pickle, a text file, a missing file).

    .. versionadded:: 0.1
    """
    try:
        with safe_open(str(path), framework='pt') as file:
            text = (file.metadata() or {}).get(METADATA_KEY)
    except (SafetensorError, OSError):
        return None
    try:
        metadata = json.loads(text) if text is not None else None
    except json.JSONDecodeError:
        return None
    return metadata if isinstance(metadata, dict) else None


def _unshared(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Return contiguous CPU tensors, copying any that share memory with another."""
    tensors: dict[str, Tensor] = {}
    storages: set[int] = set()
    for key, value in state_dict.items():
        tensor = value.detach().cpu().contiguous()
        if tensor.untyped_storage().data_ptr() in storages:
            tensor = tensor.clone()
        storages.add(tensor.untyped_storage().data_ptr())
        tensors[key] = tensor
    return tensors
