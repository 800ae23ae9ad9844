"""Fixed 2-D sine-cosine position embeddings, as in MAE.

The formula is the one of He et al., "Masked Autoencoders Are Scalable Vision
Learners" (CVPR 2022), https://arxiv.org/abs/2111.06377, reference code
``util/pos_embed.py``: half of the channels encode the column (x) of a patch, the
other half its row (y), each half as ``[sin(pos * omega), cos(pos * omega)]`` with
``omega = 1 / 10000 ** (2i / (D / 2))``. Because the embedding is a function of the
grid, it is recomputed for any image size instead of being resampled.

Checkpoints whose encoder learned its absolute position embedding (timm's
supervised ViTs, fine-tuned MAE checkpoints) keep it: :func:`patch_pos_embed`
resamples a learned embedding to the grid of every batch with timm's
``resample_abs_pos_embed`` (bicubic), and computes sin-cos where there is none.
"""

import math

import torch
from timm.layers import resample_abs_pos_embed
from torch import Tensor

__all__ = (
    'patch_pos_embed',
    'resample_pos_embed',
    'sincos_pos_embed_1d',
    'sincos_pos_embed_2d',
)

#: Wavelength scale of the sine-cosine frequencies (MAE, "Attention Is All You Need").
_TEMPERATURE = 10000.0


def sincos_pos_embed_1d(embed_dim: int, positions: Tensor) -> Tensor:
    """Embed 1-D positions with sines and cosines.

    Args:
        embed_dim: Number of output channels, even.
        positions: Positions of any shape; they are flattened.

    Returns:
        Embeddings of shape ``(positions.numel(), embed_dim)``: the sines in the first
        half of the channels, the cosines in the second.

    Raises:
        ValueError: If *embed_dim* is odd.

    .. versionadded:: 0.1
    """
    if embed_dim % 2:
        raise ValueError(
            f'embed_dim must be even for a 1-D sin-cos embedding, got {embed_dim}'
        )
    omega = torch.arange(embed_dim // 2, dtype=torch.float64, device=positions.device)
    omega = 1.0 / _TEMPERATURE ** (omega / (embed_dim / 2))
    angles = torch.outer(positions.reshape(-1).to(torch.float64), omega)
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_pos_embed_2d(
    embed_dim: int,
    grid_size: int | tuple[int, int],
    *,
    cls_token: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Build the fixed position embeddings of a grid of patches.

    Patches are numbered row by row, as a ViT flattens its patch grid. The first
    ``embed_dim / 2`` channels encode the column of a patch and the others its row,
    which reproduces MAE's embeddings (and so its checkpoints) on square grids.

    Args:
        embed_dim: Number of channels, a multiple of 4.
        grid_size: Number of patch rows and columns, ``(gh, gw)``, or one number for a
            square grid.
        cls_token: Prepend a row of zeros for a class token, as MAE does.
        device: Device of the result.
        dtype: Data type of the result.

    Returns:
        Embeddings of shape ``(gh * gw, embed_dim)``, or ``(1 + gh * gw, embed_dim)``
        with *cls_token*.

    Raises:
        ValueError: If *embed_dim* is not a multiple of 4 or the grid is empty.

    .. versionadded:: 0.1
    """
    if embed_dim % 4:
        raise ValueError(
            f'embed_dim must be a multiple of 4 for a 2-D sin-cos embedding, got {embed_dim}'
        )
    gh, gw = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
    if gh < 1 or gw < 1:
        raise ValueError(f'grid_size must be positive, got {(gh, gw)}')
    rows, cols = torch.meshgrid(
        torch.arange(gh, device=device), torch.arange(gw, device=device), indexing='ij'
    )
    embed = torch.cat(
        [
            sincos_pos_embed_1d(embed_dim // 2, cols),
            sincos_pos_embed_1d(embed_dim // 2, rows),
        ],
        dim=1,
    )
    if cls_token:
        embed = torch.cat([embed.new_zeros(1, embed_dim), embed], dim=0)
    return embed.to(dtype)


def resample_pos_embed(pos_embed: Tensor, grid_size: tuple[int, int]) -> Tensor:
    """Resample a learned embedding with a class-token row to a grid of patches.

    Args:
        pos_embed: ``(1, 1 + gh * gw, D)`` of a square grid, class token first (an
            embedding of a square grid without that row gets a zero one, as MAE's).
        grid_size: the new ``(rows, columns)``.

    Returns:
        ``(1, 1 + rows * columns, D)``; *pos_embed* itself when the grid is its own.

    .. versionadded:: 0.2
    """
    tokens = pos_embed.shape[1]
    if math.isqrt(tokens) ** 2 == tokens:  # no class-token row (timm's no_embed_class)
        pos_embed = torch.cat(
            [pos_embed.new_zeros(1, 1, pos_embed.shape[-1]), pos_embed], 1
        )
    resampled: Tensor = resample_abs_pos_embed(
        pos_embed, list(grid_size), num_prefix_tokens=1
    )
    return resampled


def patch_pos_embed(
    learned: Tensor | None,
    embed_dim: int,
    grid_size: tuple[int, int],
    *,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor | None]:
    """Position embeddings of a patch grid and of the class token.

    Args:
        learned: a learned ``(1, 1 + N, D)`` embedding, or None for fixed sin-cos.
        embed_dim: D.
        grid_size: ``(rows, columns)`` of patches.
        device: device of the result.
        dtype: data type of the result.

    Returns:
        ``(rows * columns, D)`` for the patches and ``(1, 1, D)`` for the class
        token (None with sin-cos: MAE's class-token embedding is zero).

    .. versionadded:: 0.2
    """
    if learned is None:
        return sincos_pos_embed_2d(
            embed_dim, grid_size, device=device, dtype=dtype
        ), None
    resampled = resample_pos_embed(learned, grid_size).to(dtype)
    return resampled[0, 1:], resampled[:, :1]
