"""The glue between the encoder and torchvision's Faster R-CNN.

:class:`ViTDetBackbone` turns the encoder into a torchvision backbone (ViTDet's
simple feature pyramid), :class:`TileTransform` passes normalised tiles of any band
count through torchvision's detection transform, and :func:`roi_pool` sets RoIAlign's
scales and level mapping from the patch size.
"""

from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal, TypeAlias

from torch import Tensor, nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.poolers import initLevelMapper

from .encoder import SensorEncoder
from .heads import PYRAMID_SCALES, BlockPyramid, SimpleFeaturePyramid
from .segmentation import resolve_out_indices
from .task_base import check_pyramid_size

__all__ = (
    'MULTI_BLOCK_SHARES',
    'ROI_SIZE',
    'Pyramid',
    'TileTransform',
    'ViTDetBackbone',
    'roi_pool',
)

#: Names of the pyramid levels, finest first (P4 at the patch stride).
_LEVEL_NAMES = ('p2', 'p3', 'p4', 'p5', 'p6')

#: Side of the RoI features of the detection head, as Faster R-CNN.
ROI_SIZE = 7

#: Level of the detection pyramid at the patch stride; ``p2`` is at ``patch / 4``.
_NATIVE_LEVEL = 4

#: Side of the box that RoIAlign pools from the native level, per pixel of patch:
#: FPN's 224-pixel box at stride 16, scaled with the stride for other patches.
_CANONICAL_BOX_PER_PATCH = 14


#: Depths of the first three blocks of the multi-block pyramid, as shares.
MULTI_BLOCK_SHARES = (1 / 4, 1 / 2, 3 / 4)

#: The pyramids of :class:`ViTDetBackbone`.
Pyramid: TypeAlias = Literal['last', 'multi']


class ViTDetBackbone(nn.Module):
    """The encoder and a feature pyramid P2-P6, as a torchvision backbone.

    ``pyramid='last'`` (ViTDet, Li et al., ECCV 2022): the last block's output,
    through the final norm, is turned into P2-P6 at strides ``p/4, p/2, p, 2p, 4p``
    by :class:`~dspt_geo.models.heads.SimpleFeaturePyramid`. ``pyramid='multi'``
    (the Faster R-CNN configs of MAE/CSPT-style detection, which feed four blocks,
    3/5/7/11 of ViT-B, to an FPN): the outputs of four blocks (by default at 1/4,
    1/2, 3/4 of the depth and the last), through the final norm, are rescaled to
    the same strides by :class:`~dspt_geo.models.heads.BlockPyramid` and merged by
    torchvision's ``FeaturePyramidNetwork`` (Lin et al., CVPR 2017), P6 by
    subsampling P5. All blocks use global attention (ViTDet's window attention is
    not used).

    .. versionadded:: 0.1
    .. versionchanged:: 0.1
       Added *pyramid* and *out_indices*.
    """

    #: Channels of every level (torchvision's backbone contract).
    out_channels: int

    def __init__(
        self,
        encoder: SensorEncoder,
        out_channels: int = 256,
        *,
        pyramid: Pyramid = 'last',
        out_indices: Sequence[int] | None = None,
    ) -> None:
        """Initialise the backbone.

        Args:
            encoder: The encoder, with its weights.
            out_channels: Channels of every pyramid level.
            pyramid: ``'last'`` or ``'multi'``.
            out_indices: ``'multi'``: four zero-based blocks, shallowest first;
                None: at 1/4, 1/2, 3/4 of the depth and the last.

        Raises:
            ValueError: If an option is invalid.
        """
        super().__init__()
        self.encoder = encoder
        self.out_channels = out_channels
        self.pyramid_kind = pyramid
        match pyramid:
            case 'last':
                if out_indices is not None:
                    raise ValueError("out_indices needs pyramid='multi'")
                self.out_indices = [encoder.num_layers - 1]
                self.pyramid = SimpleFeaturePyramid(encoder.embed_dim, out_channels)
            case 'multi':
                self.out_indices = resolve_out_indices(
                    out_indices, encoder.num_layers, MULTI_BLOCK_SHARES
                )
                self.neck = BlockPyramid(encoder.embed_dim)
                self.fpn = FeaturePyramidNetwork(
                    [encoder.embed_dim] * len(PYRAMID_SCALES),
                    out_channels,
                    extra_blocks=LastLevelMaxPool(),
                )
            case _:
                raise ValueError(f"pyramid must be 'last' or 'multi', got {pyramid!r}")

    @property
    def level_names(self) -> tuple[str, ...]:
        """Names of the levels, finest first."""
        return _LEVEL_NAMES

    @property
    def strides(self) -> list[float]:
        """Stride of every level in pixels."""
        p = self.encoder.patch_size
        return [p / scale for scale in PYRAMID_SCALES] + [4.0 * p]

    def forward(self, images: Tensor) -> 'OrderedDict[str, Tensor]':
        """Compute the pyramid.

        Args:
            images: ``(B, C, H, W)``, H and W divisible by the patch size and at
                least twice the patch size.

        Returns:
            The levels by name.
        """
        check_pyramid_size(images, self.encoder.patch_size)
        features = self.encoder.forward_intermediates(
            images, self.out_indices, norm=True
        )
        if self.pyramid_kind == 'last':
            levels = self.pyramid(features[0])
        else:
            names = self.level_names[: len(PYRAMID_SCALES)]
            levels = list(
                self.fpn(
                    OrderedDict(zip(names, self.neck(features), strict=True))
                ).values()
            )
        return OrderedDict(zip(self.level_names, levels, strict=True))


class TileTransform(GeneralizedRCNNTransform):  # type: ignore[misc]  # torchvision is untyped
    """torchvision's detection transform without normalisation and resizing.

    dspt-geo normalises the bands itself and keeps the ground sampling distance, so
    images pass through as they are (any band count, any size); they are only
    padded to a multiple of the patch size when batched.
    """

    def normalize(self, image: Tensor) -> Tensor:
        """Return the image unchanged (it is already normalised)."""
        if not image.is_floating_point():
            raise TypeError(f'images must be floating point, got {image.dtype}')
        return image

    def resize(
        self, image: Tensor, target: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        """Return the image and its target unchanged (no rescaling of tiles)."""
        return image, target


def roi_pool(levels: Sequence[str], patch_size: int) -> MultiScaleRoIAlign:
    """RoIAlign over P2-P5 with their exact scales.

    torchvision infers the scales from the first batch, rounded to powers of two,
    which is wrong for patches such as 14 pixels; here they are set from the
    strides. Levels are numbered as in FPN (P4 at the patch stride), and a box of
    14 patches' side is pooled from P4, as FPN pools a 224-pixel box from stride 16.
    """
    pool = MultiScaleRoIAlign(
        featmap_names=list(levels), output_size=ROI_SIZE, sampling_ratio=2
    )
    pool.scales = [scale / patch_size for scale in PYRAMID_SCALES]
    first = _NATIVE_LEVEL - 2
    pool.map_levels = initLevelMapper(
        first,
        first + len(levels) - 1,
        canonical_scale=_CANONICAL_BOX_PER_PATCH * patch_size,
        canonical_level=_NATIVE_LEVEL,
    )
    return pool
