"""k-NN and logistic heads on learnable synthetic features."""

import torch

from dspt_geo.probe import knn_classify, logistic_classify


def _clusters(
    count: int, seed: int, spread: float
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, 16, generator=torch.Generator().manual_seed(99)) * 3
    labels = torch.arange(count) % 4
    return centres[labels] + spread * torch.randn(
        count, 16, generator=generator
    ), labels


def test_knn_learns_clusters_and_not_noise() -> None:
    x, y = _clusters(200, 0, 1.0)
    query, truth = _clusters(100, 1, 1.0)
    accuracy = (knn_classify(x, y, query, 4) == truth).float().mean()
    assert accuracy > 0.95
    shuffled = y[torch.randperm(200, generator=torch.Generator().manual_seed(0))]
    chance = (knn_classify(x, shuffled, query, 4) == truth).float().mean()
    assert chance < 0.5


def test_knn_with_fewer_neighbours_than_k() -> None:
    x, y = _clusters(8, 0, 0.5)
    query, truth = _clusters(40, 1, 0.5)
    assert (knn_classify(x, y, query, 4, k=20) == truth).float().mean() > 0.9


def test_logistic_learns_and_chooses_a_penalty() -> None:
    x, y = _clusters(200, 0, 2.0)
    val, val_y = _clusters(60, 2, 2.0)
    query, truth = _clusters(200, 1, 2.0)
    predicted, decay = logistic_classify(x, y, val, val_y, query, 4)
    assert (predicted == truth).float().mean() > 0.9
    assert decay in (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    # With no validation data, the middle penalty.
    _, middle = logistic_classify(x, y, val[:0], val_y[:0], query, 4)
    assert middle == 1e-2
