import numpy as np
import pytest
import torch

from dspt_geo.models import sincos_pos_embed_1d, sincos_pos_embed_2d


def mae_reference(embed_dim: int, grid_size: int) -> np.ndarray:
    """MAE's util/pos_embed.py get_2d_sincos_pos_embed, with cls_token=True."""

    def one_d(dim: int, pos: np.ndarray) -> np.ndarray:
        omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
        omega = 1.0 / 10000**omega
        out = np.einsum('m,d->md', pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid = np.meshgrid(
        np.arange(grid_size, dtype=np.float32), np.arange(grid_size, dtype=np.float32)
    )
    grid = np.stack(grid, axis=0).reshape([2, 1, grid_size, grid_size])
    embed = np.concatenate(
        [one_d(embed_dim // 2, grid[0]), one_d(embed_dim // 2, grid[1])], axis=1
    )
    return np.concatenate([np.zeros([1, embed_dim]), embed], axis=0)


def test_matches_mae_reference() -> None:
    ours = sincos_pos_embed_2d(64, 5, cls_token=True)
    assert ours.shape == (26, 64)
    np.testing.assert_allclose(ours.numpy(), mae_reference(64, 5), atol=1e-6)


def test_known_values_at_origin_and_cls_row() -> None:
    embed = sincos_pos_embed_2d(16, (3, 4), cls_token=True)
    assert torch.equal(embed[0], torch.zeros(16))
    origin = embed[1]
    # [sin(x), cos(x), sin(y), cos(y)] with x = y = 0
    expected = torch.tensor([0.0] * 4 + [1.0] * 4 + [0.0] * 4 + [1.0] * 4)
    torch.testing.assert_close(origin, expected)


def test_rectangular_grid_is_row_major_columns_first() -> None:
    gh, gw, dim = 3, 5, 24
    embed = sincos_pos_embed_2d(dim, (gh, gw))
    assert embed.shape == (gh * gw, dim)
    row, col = 2, 3
    expected = torch.cat(
        [
            sincos_pos_embed_1d(dim // 2, torch.tensor([col])),
            sincos_pos_embed_1d(dim // 2, torch.tensor([row])),
        ],
        dim=1,
    )[0]
    torch.testing.assert_close(embed[row * gw + col], expected)


def test_positions_are_distinct_and_dtype_follows() -> None:
    embed = sincos_pos_embed_2d(32, 6, dtype=torch.float16)
    assert embed.dtype == torch.float16
    distances = torch.cdist(embed.float(), embed.float())
    off_diagonal = distances[~torch.eye(36, dtype=torch.bool)]
    assert off_diagonal.min() > 0.1


@pytest.mark.parametrize('dim', [6, 30])
def test_dim_must_be_multiple_of_four(dim: int) -> None:
    with pytest.raises(ValueError, match='multiple of 4'):
        sincos_pos_embed_2d(dim, 4)


def test_one_d_needs_even_dim() -> None:
    with pytest.raises(ValueError, match='even'):
        sincos_pos_embed_1d(5, torch.arange(3))
