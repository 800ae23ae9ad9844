"""What every fine-tuning task model shares: its name, config and layer ids.

Every model describes itself with :meth:`TaskModelBase.config` (plain JSON: the
encoder's :class:`~dspt_geo.models.encoder.EncoderSpec`, the number of classes and the
head options), and :func:`~dspt_geo.models.tasks.build_task_model_from_config`
rebuilds it with random weights, ready for ``load_state_dict``: a fine-tuned model
file stores the state dict as safetensors and the config as metadata, and loading it
never unpickles.

Layer-wise learning-rate decay (BEiT, MAE fine-tuning): ``layer_id`` numbers every
parameter, 0 for the stem and class token, ``i + 1`` for block ``i``, and
``num_layers + 1`` for the final norm and the whole head; a group's learning rate is
``lr * decay ** (num_layers + 1 - layer_id)``.
"""

from typing import Any, ClassVar, TypeAlias

from torch import Tensor

from ..task import Task
from .encoder import SensorEncoder

__all__ = (
    'CONFIG_VERSION',
    'TaskModelBase',
    'TaskName',
    'check_num_classes',
    'check_pyramid_size',
)

#: The fine-tuning tasks.
TaskName: TypeAlias = Task

#: Version of the layout of :meth:`TaskModelBase.config`. 2: classification heads
#: have their own ``fc_norm`` (version 1 ones reused the encoder's final norm). 3:
#: segmentation models name their ``neck`` (older ones are ``'full'``).
CONFIG_VERSION = 3


def check_num_classes(num_classes: int) -> None:
    """Raise ValueError unless there is at least one class.

    Args:
        num_classes: Number of classes.

    Raises:
        ValueError: If *num_classes* is below 1.
    """
    if num_classes < 1:
        raise ValueError(f'num_classes must be at least 1, got {num_classes}')


def check_pyramid_size(images: Tensor, patch_size: int) -> None:
    """Raise ValueError if images are too small for the level at stride ``2p``.

    Args:
        images: ``(B, C, H, W)``.
        patch_size: The encoder's patch size.

    Raises:
        ValueError: If H or W is below twice the patch size.
    """
    height, width = images.shape[-2:]
    if min(height, width) < 2 * patch_size:
        raise ValueError(
            f'images of {height}x{width} pixels are too small for the feature '
            f'pyramid: use at least {2 * patch_size} pixels (twice the patch size)'
        )


class TaskModelBase:
    """Mixin of the task models: layer ids and the JSON config.

    A task model sets :attr:`task`, has ``encoder`` (a
    :class:`~dspt_geo.models.encoder.SensorEncoder`, registered under
    :attr:`encoder_prefix`) and ``num_classes``, and returns its head options from
    :meth:`options`.

    .. versionadded:: 0.1
    """

    #: The task name of :func:`~dspt_geo.models.tasks.build_task_model`.
    task: ClassVar[TaskName]

    #: Prefix of the encoder's parameters in ``named_parameters()``.
    encoder_prefix: ClassVar[str] = 'encoder.'

    #: The encoder (an attribute or, in the detector, a property).
    encoder: SensorEncoder

    #: Number of classes (for detection, without the background).
    num_classes: int

    @property
    def num_layers(self) -> int:
        """Number of encoder blocks."""
        return self.encoder.num_layers

    def layer_id(self, name: str) -> int:
        """Layer of a parameter for layer-wise learning-rate decay (module docstring).

        Args:
            name: A name from ``named_parameters()``.

        Returns:
            The encoder's layer id, or ``num_layers + 1`` for everything else (the
            neck and head).
        """
        if name.startswith(self.encoder_prefix):
            return self.encoder.layer_id(name.removeprefix(self.encoder_prefix))
        return self.encoder.num_layers + 1

    def options(self) -> dict[str, Any]:
        """The keyword arguments that rebuild the model's head, as JSON values.

        Returns:
            The options.
        """
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Describe the model in plain JSON.

        See :func:`~dspt_geo.models.tasks.build_task_model_from_config`.

        Returns:
            The config.

        Raises:
            ValueError: If the encoder has no spec.
        """
        spec = self.encoder.spec
        if spec is None:
            raise ValueError(
                'the encoder has no spec, so the model cannot describe itself; build '
                'it with build_encoder or pass spec= to SensorEncoder.from_mae'
            )
        return {
            'config_version': CONFIG_VERSION,
            'task': self.task,
            'num_classes': self.num_classes,
            'encoder': spec.to_dict(),
            'options': self.options(),
        }
