"""Fine-tuned model files: one self-describing file per fine-tuned model.

``dspt-geo finetune`` ends with ``RUN_DIR/model.safetensors``
(:func:`~dspt_geo.models.save_model_file`): the task model's state dict and, as
JSON metadata, everything needed to use it without the run folder::

    {
      'kind': 'finetuned',
      'task': 'classify' | 'segment' | 'detect',
      'classes': [{'name': str, 'colour': [r, g, b]}, ...],   # output order
      'sensor': {'name': str, 'bands': [str, ...], 'in_chans': int,
                 'nodata': float | null,
                 'sar_scale': str | null, 'sar_mode': str | null,  # SAR only
                 'statistics': {...},                 # BandStatistics.to_dict()
                 'res': [x, y] | null},               # metres per pixel
      'tile': {'size': int, 'overlap': int},
      'score_threshold': float,                       # detection
      'max_objects': int | null,                      # detection: most objects
                                                      # in one training tile
      'model_config': {...},                          # the task model's config()
      'class_table': {...},                           # ClassTable.to_dict()
      'model': {'name', 'model_args', 'image_size', 'patch_size', ...},
      'training': {...}                               # run summary, best metric
    }

:func:`load_finetuned` rebuilds the model from ``model_config`` and loads its
weights strictly; nothing is unpickled.
"""

import os
from typing import Any

from torch import nn

from ..errors import CheckpointError
from .model_file import load_model_file
from .tasks import build_task_model_from_config

__all__ = ('FINETUNED_KIND', 'load_finetuned')

#: ``metadata['kind']`` of a fine-tuned model file.
FINETUNED_KIND = 'finetuned'

#: What the other kinds of model file are, for the error message.
_OTHER_KINDS = {
    'mae-pretrained': (
        'a pre-trained MAE encoder (from dspt-geo pretrain); fine-tune it first: '
        'dspt-geo finetune TASK --init FILE ...'
    )
}


def load_finetuned(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Load a fine-tuned model file.

    Args:
        path: a ``model.safetensors`` written by ``dspt-geo finetune``.

    Returns:
        the task model in eval mode, on the CPU, and the file's metadata (schema in
        the module docstring).

    Raises:
        CheckpointError: If the file is missing or unreadable, is another kind of
            model file (e.g. a pre-trained MAE encoder), or its weights do not fit
            its model configuration.

    .. versionadded:: 0.1
    """
    state, metadata = load_model_file(path)
    kind = metadata.get('kind')
    if kind != FINETUNED_KIND:
        what = _OTHER_KINDS.get(str(kind), f'a model file of kind {kind!r}')
        msg = f'{path} is not a fine-tuned model: it is {what}'
        raise CheckpointError(msg)
    config = metadata.get('model_config')
    if not isinstance(config, dict):
        msg = f'{path} has no model_config in its metadata; it cannot be rebuilt'
        raise CheckpointError(msg)
    model = build_task_model_from_config(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        msg = f'the weights of {path} do not fit its model configuration: {error}'
        raise CheckpointError(msg) from error
    return model.eval(), metadata
