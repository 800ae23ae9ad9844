"""The peak learning rate, AdamW parameter groups and the warmup + cosine schedule."""

import logging
import math
from collections.abc import Iterable
from typing import Any, Protocol

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from .. import SUMMARY_LOGGER

__all__ = (
    'LayeredModel',
    'WarmupCosine',
    'adamw',
    'decay_groups',
    'layer_decay_groups',
    'peak_lr',
    'scaled_lr',
)

logger = logging.getLogger(__name__)
summary = logging.getLogger(SUMMARY_LOGGER)


def scaled_lr(base_lr: float, effective_batch: int) -> float:
    """MAE's linear scaling rule: ``base_lr * effective_batch / 256``."""
    return base_lr * effective_batch / 256


def peak_lr(
    lr: float | None,
    base_lr: float,
    effective_batch: int,
    *,
    low: float,
    suggested: float,
) -> float:
    """The run's peak learning rate, said once; a warning when it is low.

    Args:
        lr: the absolute peak (``--lr``), or None to scale *base_lr*.
        base_lr: the rate per 256 images (``--base-lr``).
        effective_batch: images per optimiser step, all processes together.
        low: below this peak, a short or small-batch run barely learns.
        suggested: the ``--lr`` the warning suggests.

    Returns:
        *lr*, else :func:`scaled_lr`.
    """
    if lr is not None:
        peak, source = lr, '--lr'
    else:
        peak = scaled_lr(base_lr, effective_batch)
        source = f'--base-lr {base_lr:g} x batch {effective_batch} / 256'
    summary.info('peak learning rate %.3g (%s)', peak, source)
    if peak < low:
        logger.warning(
            'peak learning rate %.3g is low for a short or small-batch run; '
            'consider --lr %g',
            peak,
            suggested,
        )
    return peak


def adamw(
    groups: Iterable[dict[str, Any]] | Iterable[nn.Parameter],
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.AdamW:
    """AdamW with torch's fused kernel where every parameter allows it.

    The fused implementation updates all tensors of a group in one kernel instead
    of a dozen ``foreach`` operations per group: on the CPU it halves the
    optimiser's share of a tiny ViT's step (7.4 to 3.7 ms of about 55 ms at batch
    8, 16 layer-decay groups; BENCHMARKS.md). It needs floating-point parameters
    on the CPU or a CUDA device; elsewhere the default implementation is used.
    The update is AdamW's either way (the state dicts are interchangeable).

    Args:
        groups: parameters, or parameter groups (dicts with ``params``).
        lr: default learning rate of the groups.
        betas: AdamW betas.

    Returns:
        the optimiser.
    """
    listed: list[Any] = list(groups)
    params = [
        p
        for group in listed
        for p in (group['params'] if isinstance(group, dict) else [group])
    ]
    fused = bool(params) and all(
        p.is_floating_point() and p.device.type in ('cpu', 'cuda') for p in params
    )
    return torch.optim.AdamW(listed, lr=lr, betas=betas, fused=fused or None)


def _no_decay(name: str, param: nn.Parameter) -> bool:
    """Norms, biases, position embeddings and tokens take no weight decay."""
    return param.ndim <= 1 or 'pos_embed' in name or 'token' in name


def decay_groups(
    named_parameters: Iterable[tuple[str, nn.Parameter]], weight_decay: float
) -> list[dict[str, object]]:
    """Split parameters into a weight-decay group and a no-decay group.

    Args:
        named_parameters: ``module.named_parameters()``.
        weight_decay: decay of the first group.

    Returns:
        parameter groups for :class:`torch.optim.AdamW` (empty groups left out).
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in named_parameters:
        if param.requires_grad:
            (no_decay if _no_decay(name, param) else decay).append(param)
    groups = [
        {'params': decay, 'weight_decay': weight_decay},
        {'params': no_decay, 'weight_decay': 0.0},
    ]
    return [group for group in groups if group['params']]


class LayeredModel(Protocol):
    """A model that numbers its parameters' layers, as the task models do."""

    @property
    def num_layers(self) -> int:
        """Number of encoder blocks."""

    def layer_id(self, name: str) -> int:
        """Layer of a parameter: 0 for the stem, ``num_layers + 1`` for the head."""

    def named_parameters(self) -> Iterable[tuple[str, nn.Parameter]]:
        """``nn.Module.named_parameters``."""


def layer_decay_groups(
    model: LayeredModel, lr: float, weight_decay: float, layer_decay: float
) -> list[dict[str, Any]]:
    """Parameter groups with layer-wise learning-rate decay (BEiT, MAE fine-tuning).

    Layer ``i`` (see the task models' ``layer_id``) learns at
    ``lr * layer_decay ** (num_layers + 1 - i)``: the head at *lr*, the stem
    slowest. Within a layer, norms, biases, position embeddings and tokens take no
    weight decay (the rule of :func:`decay_groups`).

    Args:
        model: a task model (``num_layers``, ``layer_id``).
        lr: peak learning rate of the head.
        weight_decay: AdamW weight decay of the decayed parameters.
        layer_decay: decay per layer; 1 gives every layer *lr*.

    Returns:
        parameter groups for :class:`torch.optim.AdamW`, each with its ``lr`` and
        its ``layer_id``.

    .. versionadded:: 0.1
    """
    top = model.num_layers + 1
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        layer = model.layer_id(name)
        no_decay = _no_decay(name, param)
        group = groups.setdefault(
            (layer, no_decay),
            {
                'params': [],
                'lr': lr * layer_decay ** (top - layer),
                'weight_decay': 0.0 if no_decay else weight_decay,
                'layer_id': layer,
            },
        )
        group['params'].append(param)
    return [groups[key] for key in sorted(groups)]


class WarmupCosine(LambdaLR):
    """Linear warmup from 0, then cosine decay to *min_ratio* of the peak, per step.

    Its state is the step reached; the warmup, length and floor are settings of the
    run, not restored by :meth:`load_state_dict`, so that a run resumed with more
    steps stretches the cosine to its new length instead of staying at the old
    run's final rate.
    """

    #: Attributes that are settings of the schedule, not its state.
    SETTINGS = ('warmup_steps', 'total_steps', 'min_ratio')

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int,
        total_steps: int,
        min_ratio: float = 0.0,
    ) -> None:
        """Initialise the schedule.

        Args:
            optimizer: optimiser whose groups' ``lr`` is the peak.
            warmup_steps: steps of linear warmup.
            total_steps: steps of the whole run.
            min_ratio: final learning rate as a share of the peak.
        """
        self.warmup_steps = warmup_steps
        self.total_steps = max(total_steps, warmup_steps + 1)
        self.min_ratio = min_ratio
        super().__init__(optimizer, self.factor)

    def factor(self, step: int) -> float:
        """Multiplier of the peak learning rate at *step*."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(
            1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        )
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return self.min_ratio + (1 - self.min_ratio) * cosine

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the step reached, keeping this schedule's settings."""
        super().load_state_dict(
            {
                key: value
                for key, value in state_dict.items()
                if key not in self.SETTINGS
            }
        )
