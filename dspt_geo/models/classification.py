"""Scene classification: a pooled encoder feature and a linear classifier."""

from typing import Any, ClassVar, Literal

from torch import Tensor, nn

from .encoder import SensorEncoder
from .task_base import TaskModelBase, TaskName, check_num_classes

__all__ = ('ClassificationModel',)


class ClassificationModel(TaskModelBase, nn.Module):
    """Scene classifier: a pooled encoder feature and a linear layer.

    ``pool='mean'`` averages the patch tokens of the last block and normalises the
    average with a fresh ``fc_norm`` (MAE fine-tuning's default, He et al. 2022,
    https://arxiv.org/abs/2111.06377): the encoder's final norm was trained for
    every token before pooling, not for their mean, so it is left out (frozen, so
    that DDP finds no unused trained parameter; a probe of the encoder still uses
    it). With ``fc_norm=False`` the encoder's final norm normalises the mean, as
    model files of config version 1 do. ``pool='cls'`` takes the normalised class
    token. The classifier starts near zero (std 2e-5, as MAE fine-tuning).

    .. versionadded:: 0.1
    .. versionchanged:: 0.1
       Added *fc_norm* (issue 13).
    """

    #: The task name of :func:`~dspt_geo.models.tasks.build_task_model`.
    task: ClassVar[TaskName] = 'classify'

    def __init__(
        self,
        encoder: SensorEncoder,
        num_classes: int,
        *,
        pool: Literal['mean', 'cls'] = 'mean',
        drop_rate: float = 0.0,
        fc_norm: bool = True,
    ) -> None:
        """Initialise the classifier.

        Args:
            encoder: The encoder, with its weights.
            num_classes: Number of classes.
            pool: How to pool the tokens, ``'mean'`` or ``'cls'``.
            drop_rate: Dropout before the classifier.
            fc_norm: With ``pool='mean'``, normalise the pooled tokens with a
                new LayerNorm instead of the encoder's final norm.

        Raises:
            ValueError: If an option is invalid.
        """
        super().__init__()
        check_num_classes(num_classes)
        if pool not in ('mean', 'cls'):
            raise ValueError(f"pool must be 'mean' or 'cls', got {pool!r}")
        self.num_classes = num_classes
        self.pool = pool
        self.drop_rate = drop_rate
        self.encoder = encoder
        #: The pooled feature's own norm (MAE's ``fc_norm``); None: the encoder's.
        self.fc_norm = (
            nn.LayerNorm(encoder.embed_dim, eps=1e-6)
            if fc_norm and pool == 'mean'
            else None
        )
        if self.fc_norm is not None:
            encoder.norm.requires_grad_(False)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(encoder.embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)
        nn.init.zeros_(self.head.bias)

    def forward_features(self, images: Tensor) -> Tensor:
        """Encode and pool images.

        Args:
            images: ``(B, C, H, W)``, H and W divisible by the patch size.

        Returns:
            Pooled features ``(B, embed_dim)``.
        """
        match self.pool:
            case 'mean':
                tokens = self.encoder(images, norm=False)
                norm = self.fc_norm if self.fc_norm is not None else self.encoder.norm
                pooled: Tensor = norm(tokens[:, 1:].mean(dim=1))
                return pooled
            case 'cls':
                cls_token: Tensor = self.encoder(images)[:, 0]
                return cls_token

    def forward_head(self, features: Tensor) -> Tensor:
        """Classify pooled features.

        Args:
            features: ``(B, embed_dim)`` from :meth:`forward_features`.

        Returns:
            Logits ``(B, num_classes)``.
        """
        logits: Tensor = self.head(self.head_drop(features))
        return logits

    def forward(self, images: Tensor) -> Tensor:
        """Classify images.

        Args:
            images: ``(B, C, H, W)``, H and W divisible by the patch size.

        Returns:
            Logits ``(B, num_classes)``.
        """
        return self.forward_head(self.forward_features(images))

    def options(self) -> dict[str, Any]:
        """The head options (see :meth:`~dspt_geo.models.task_base.TaskModelBase.config`).

        Returns:
            ``pool``, ``drop_rate`` and ``fc_norm``.
        """
        return {
            'pool': self.pool,
            'drop_rate': self.drop_rate,
            'fc_norm': self.fc_norm is not None,
        }
