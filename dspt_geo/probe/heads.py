"""The probe's classifiers on frozen features: weighted k-NN and logistic regression.

k-NN is the one of DINO (Caron et al., "Emerging Properties in Self-Supervised
Vision Transformers", ICCV 2021, https://arxiv.org/abs/2104.14294): cosine
similarity to the training features, the k nearest vote with weight
``exp(similarity / temperature)``. Logistic regression is multinomial, on
standardised features, fitted by L-BFGS in torch (a few milliseconds for thousands
of chips, no further dependency), its L2 penalty chosen on a validation split.
"""

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ('HEADS', 'WEIGHT_DECAYS', 'Head', 'knn_classify', 'logistic_classify')

Head = Literal['knn', 'logistic']

#: The probe's heads.
HEADS: tuple[Head, ...] = ('knn', 'logistic')

#: L2 penalties tried by the logistic probe (on standardised features).
WEIGHT_DECAYS: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def knn_classify(
    train: Tensor,
    train_labels: Tensor,
    query: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
) -> Tensor:
    """Classify *query* by a weighted vote of its k nearest training features.

    Args:
        train: ``(N, D)`` training features.
        train_labels: ``(N,)`` their classes.
        query: ``(M, D)`` features to classify.
        num_classes: number of classes.
        k: neighbours (fewer when there are fewer training features).
        temperature: vote weights are ``exp(cosine similarity / temperature)``.

    Returns:
        ``(M,)`` predicted classes.
    """
    train = F.normalize(train.float(), dim=1)
    query = F.normalize(query.float(), dim=1)
    k = min(k, train.shape[0])
    predictions = []
    for chunk in query.split(1024):
        similarity, index = (chunk @ train.T).topk(k, dim=1)
        weights = (similarity / temperature).exp()
        votes = torch.zeros(chunk.shape[0], num_classes, dtype=weights.dtype)
        votes.scatter_add_(1, train_labels[index], weights)
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions)


def _fit_logistic(
    features: Tensor, labels: Tensor, num_classes: int, weight_decay: float
) -> tuple[Tensor, Tensor]:
    """Weights and bias of a multinomial logistic regression with an L2 penalty."""
    weight = torch.zeros(features.shape[1], num_classes, requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    optimiser = torch.optim.LBFGS(
        [weight, bias], lr=1, max_iter=200, line_search_fn='strong_wolfe'
    )

    def closure() -> Tensor:
        optimiser.zero_grad()
        loss = F.cross_entropy(features @ weight + bias, labels)
        loss = loss + weight_decay / 2 * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimiser.step(closure)
    return weight.detach(), bias.detach()


def logistic_classify(
    train: Tensor,
    train_labels: Tensor,
    val: Tensor,
    val_labels: Tensor,
    query: Tensor,
    num_classes: int,
    weight_decays: Sequence[float] = WEIGHT_DECAYS,
) -> tuple[Tensor, float]:
    """Classify *query* by logistic regression, its penalty chosen on *val*.

    Features are standardised by the training features' mean and spread. The
    penalty with the best validation accuracy wins (the stronger one on ties).

    Args:
        train: ``(N, D)`` training features.
        train_labels: ``(N,)`` their classes.
        val: ``(V, D)`` validation features (V may be 0: the middle penalty).
        val_labels: ``(V,)`` their classes.
        query: ``(M, D)`` features to classify.
        num_classes: number of classes.
        weight_decays: penalties to try.

    Returns:
        ``(M,)`` predicted classes and the chosen penalty.
    """
    mean = train.mean(dim=0)
    std = train.std(dim=0).nan_to_num(1.0).clamp_min(1e-6)

    def scale(x: Tensor) -> Tensor:
        return (x.float() - mean) / std

    train, val, query = scale(train), scale(val), scale(query)
    if val.shape[0] == 0:
        chosen = sorted(weight_decays)[len(weight_decays) // 2]
    else:
        best = -1.0
        chosen = weight_decays[0]
        for decay in sorted(weight_decays, reverse=True):
            weight, bias = _fit_logistic(train, train_labels, num_classes, decay)
            accuracy = float(
                ((val @ weight + bias).argmax(1) == val_labels).float().mean()
            )
            if accuracy > best:
                best, chosen = accuracy, decay
    weight, bias = _fit_logistic(train, train_labels, num_classes, chosen)
    return (query @ weight + bias).argmax(dim=1), chosen
