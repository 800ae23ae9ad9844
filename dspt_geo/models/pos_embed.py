"""Fixed 2-D sine-cosine position embeddings, as in MAE.

The formula is the one of He et al., "Masked Autoencoders Are Scalable Vision
Learners" (CVPR 2022), https://arxiv.org/abs/2111.06377, reference code
``util/pos_embed.py``: half of the channels encode the column (x) of a patch, the
other half its row (y), each half as ``[sin(pos * omega), cos(pos * omega)]`` with
``omega = 1 / 10000 ** (2i / (D / 2))``. Because the embedding is a function of the
grid, it is recomputed for any image size instead of being resampled.
"""

import torch
from torch import Tensor

__all__ = ('sincos_pos_embed_1d', 'sincos_pos_embed_2d')

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
