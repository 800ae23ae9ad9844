"""Fine-tuning models: scene classification, segmentation and object detection.

Every model takes a :class:`~dspt_geo.models.encoder.SensorEncoder` and adds a head:

* :class:`~dspt_geo.models.classification.ClassificationModel`: mean-pooled patch
  tokens (MAE's fine-tuning default) or the class token, then a linear classifier;
* :class:`~dspt_geo.models.segmentation.SegmentationModel`: four encoder blocks
  rescaled to a pyramid (:class:`~dspt_geo.models.heads.BlockPyramid`, BEiT) and a
  UperNet decoder (:class:`~dspt_geo.models.heads.UperNetHead`);
* :class:`~dspt_geo.models.detection.DetectionModel`: torchvision's Faster R-CNN on
  ViTDet's simple feature pyramid
  (:class:`~dspt_geo.models.detection_glue.ViTDetBackbone`).

This module builds them by task name, and rebuilds them from their config
(:mod:`~dspt_geo.models.task_base`, which also describes their layer ids).
"""

from collections.abc import Mapping
from typing import Any, TypeAlias

from ..errors import CheckpointError
from .classification import ClassificationModel
from .detection import DetectionModel
from .encoder import EncoderSpec, SensorEncoder
from .segmentation import SegmentationModel
from .task_base import CONFIG_VERSION, TaskName

__all__ = ('TaskModel', 'build_task_model', 'build_task_model_from_config')


#: Any of the task models.
TaskModel: TypeAlias = ClassificationModel | SegmentationModel | DetectionModel


def build_task_model(
    task: TaskName, encoder: SensorEncoder, num_classes: int, **options: Any
) -> TaskModel:
    """Build the model of a fine-tuning task around an encoder.

    Args:
        task: ``'classify'``, ``'segment'`` or ``'detect'``.
        encoder: The encoder, e.g. from :func:`~dspt_geo.models.build_encoder`.
        num_classes: Number of classes (for detection, without the background).
        **options: Keyword arguments of the task's model class.

    Returns:
        The model.

    Raises:
        ValueError: If the task or an option is unknown or invalid.

    .. versionadded:: 0.1
    """
    try:
        match task:
            case 'classify':
                return ClassificationModel(encoder, num_classes, **options)
            case 'segment':
                return SegmentationModel(encoder, num_classes, **options)
            case 'detect':
                return DetectionModel(encoder, num_classes, **options)
            case _:
                raise ValueError(
                    f"unknown task {task!r}; use 'classify', 'segment' or 'detect'"
                )
    except TypeError as error:  # an unknown option
        raise ValueError(f'invalid options for task {task!r}: {error}') from error


def build_task_model_from_config(config: Mapping[str, Any]) -> TaskModel:
    """Rebuild a task model, with random weights, from its :meth:`config`.

    Load the trained weights afterwards with ``load_state_dict(state, strict=True)``.

    Config layout (JSON)::

        {
          "config_version": 2,
          "task": "classify" | "segment" | "detect",
          "num_classes": int,
          "encoder": {"model": str, "in_chans": int, "image_size": int,
                      "patch_size": int, "drop_path_rate": float,
                      "model_args": {...}, "sensor": str, "bands": [str] | null},
          "options": {...}   # keyword arguments of the task's model class
        }

    Args:
        config: The config, e.g. from a model file's metadata.

    Returns:
        The model, in training mode as any new module.

    Raises:
        CheckpointError: If the config is malformed, newer than this code, or
            describes a model that cannot be built.

    .. versionadded:: 0.1
    """
    version = config.get('config_version')
    if not isinstance(version, int) or version > CONFIG_VERSION:
        raise CheckpointError(
            f'task model config version {version!r} is not one this dspt-geo reads '
            f'(up to {CONFIG_VERSION}); update dspt-geo'
        )
    missing = sorted({'task', 'num_classes', 'encoder', 'options'} - set(config))
    if missing:
        raise CheckpointError(f'task model config lacks {missing}: {dict(config)}')
    options = dict(config['options'])
    if config['task'] == 'classify' and version < 2:
        options.setdefault('fc_norm', False)  # the head reused the encoder's norm
    if config['task'] == 'segment' and version < 3:
        options.setdefault('neck', 'full')  # BEiT's widths at every level
    try:
        encoder = SensorEncoder.from_spec(EncoderSpec.from_dict(config['encoder']))
        return build_task_model(
            config['task'], encoder, config['num_classes'], **options
        )
    except ValueError as error:
        raise CheckpointError(f'invalid task model config: {error}') from error
