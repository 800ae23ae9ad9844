"""Masked autoencoder with one shared ViT encoder and one stem per sensor group.

He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022,
https://arxiv.org/abs/2111.06377, reference code https://github.com/facebookresearch/mae.

Optical and SAR rasters differ in their bands, so every sensor group has its own
patch-embedding stem and its own reconstruction head, while the transformer blocks of
the encoder and of the decoder are shared: continued pre-training adapts one encoder to
all of the user's sensors.
"""

from collections.abc import Mapping
from typing import Literal, NamedTuple

import torch
from timm.layers.norm import LayerNorm
from timm.layers.patch_embed import PatchEmbed
from timm.models import checkpoint_seq
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor, nn

from .pos_embed import patch_pos_embed, resample_pos_embed, sincos_pos_embed_2d

__all__ = ('MAEOutput', 'MaskedAutoencoder', 'random_masking')

#: Variance floor of the per-patch target normalisation (MAE ``norm_pix_loss``).
_NORM_PIX_EPS = 1e-6

#: Hidden width of the decoder MLPs relative to the decoder width, as in MAE.
_DECODER_MLP_RATIO = 4.0


class MAEOutput(NamedTuple):
    """What :meth:`MaskedAutoencoder.forward` returns."""

    #: Mean squared error over the masked patches, a scalar.
    loss: Tensor
    #: Predicted patches, ``(B, L, patch_size**2 * in_chans)``, normalised per patch
    #: when the model uses ``norm_pix_loss``.
    pred: Tensor
    #: ``(B, L)``, 1 for a masked patch and 0 for a visible one.
    mask: Tensor


def random_masking(tokens: Tensor, mask_ratio: float) -> tuple[Tensor, Tensor, Tensor]:
    """Keep a random subset of the tokens of every sample.

    Each sample draws its own permutation (the argsort of uniform noise, as MAE).

    Args:
        tokens: Patch tokens, ``(B, L, D)``.
        mask_ratio: Fraction of the tokens to mask, in (0, 1); ``round(L * (1 -
            mask_ratio))`` tokens stay visible.

    Returns:
        The visible tokens ``(B, K, D)`` in their shuffled order, the mask ``(B, L)``
        (1 = masked), and the indices ``(B, L)`` that restore the original order of
        ``[visible, masked]`` tokens.

    Raises:
        ValueError: If the ratio leaves no visible or no masked token.

    .. versionadded:: 0.1
    """
    batch, length, dim = tokens.shape
    keep = round(length * (1 - mask_ratio))
    if not 0 < keep < length:
        raise ValueError(
            f'mask_ratio {mask_ratio} leaves {keep} of {length} patches visible; '
            'at least one patch must be visible and one masked'
        )
    noise = torch.rand(batch, length, device=tokens.device)
    ids_shuffle = noise.argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    ids_keep = ids_shuffle[:, :keep]
    visible = tokens.gather(1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))
    mask = torch.ones(batch, length, device=tokens.device)
    mask[:, :keep] = 0
    return visible, mask.gather(1, ids_restore), ids_restore


def _patch_stats(patches: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation of every patch over its valid values.

    MAE's ``norm_pix_loss`` statistics (unbiased variance over the values of a patch),
    restricted to the values whose weight is 1 (issue 11: nodata is no target).

    Args:
        patches: ``(B, L, D)`` flattened patches.
        weights: ``(B, L, D)``, 1 for a valid value and 0 for nodata.

    Returns:
        The mean and standard deviation, both ``(B, L, 1)``; a patch without valid
        values gets mean 0 and deviation ``sqrt(eps)``.
    """
    count = weights.sum(dim=-1, keepdim=True)
    mean = (patches * weights).sum(dim=-1, keepdim=True) / count.clamp_min(1)
    squares = ((patches - mean).pow(2) * weights).sum(dim=-1, keepdim=True)
    var = squares / (count - 1).clamp_min(1)
    return mean, (var + _NORM_PIX_EPS).sqrt()


class MaskedAutoencoder(nn.Module):
    """Masked autoencoder over a timm ViT, with one stem and head per sensor group.

    State-dict layout (MAE's names, with a level for the sensor group):

    * ``encoder.cls_token``, ``encoder.blocks.N.*``, ``encoder.norm.*``: the shared
      timm encoder, without its own stem, with ``encoder.pos_embed`` only when it is
      learned;
    * ``patch_embed.<group>.proj.*``: the stem of every sensor group;
    * ``mask_token``, ``decoder_embed.*``, ``decoder_blocks.N.*``, ``decoder_norm.*``:
      the shared decoder;
    * ``decoder_pred.<group>.*``: the reconstruction head of every sensor group.

    Position embeddings are fixed 2-D sin-cos and computed for the patch grid of each
    batch, so any image size divisible by the patch size works; they hold no state.
    An encoder started from weights that learned theirs (:meth:`learn_pos_embed`)
    keeps a learned ``encoder.pos_embed`` of the nominal grid, resampled to the grid
    of each batch; the decoder's stay sin-cos.

    .. versionadded:: 0.1
    """

    #: Number of input bands of every sensor group.
    sensors: dict[str, int]
    #: Patch size in pixels.
    patch_size: int
    #: Width of the encoder tokens.
    embed_dim: int
    #: Width of the decoder tokens.
    decoder_embed_dim: int
    #: Whether the loss compares with per-patch normalised pixels.
    norm_pix_loss: bool

    def __init__(
        self,
        encoder: VisionTransformer,
        sensors: Mapping[str, int],
        *,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        norm_pix_loss: bool = True,
        pos_embed: Literal['sincos', 'learned'] = 'sincos',
    ) -> None:
        """Initialise a new masked autoencoder.

        All weights, the encoder's included, are initialised as in MAE; load
        pre-trained weights afterwards with
        :func:`dspt_geo.models.weights.load_init_weights`.

        Args:
            encoder: A timm ViT with a class token, no register tokens and a plain
                square-patch stem, e.g. from :func:`dspt_geo.models.create_encoder`.
                The autoencoder takes it over: its stem becomes a template for the
                sensor stems and is replaced by ``nn.Identity``, and its learned
                position embedding is removed.
            sensors: Number of input bands of every sensor group, by group name.
            decoder_embed_dim: Width of the decoder tokens, a multiple of 4.
            decoder_depth: Number of decoder blocks.
            decoder_num_heads: Number of attention heads of the decoder.
            norm_pix_loss: Compare predictions with per-patch normalised pixels.
            pos_embed: The encoder's position embedding: fixed ``'sincos'`` or
                ``'learned'`` (initialised as sin-cos, see :meth:`learn_pos_embed`).

        Raises:
            ValueError: If the encoder or the sensor groups are not supported.

        .. versionchanged:: 0.2
           Added *pos_embed*.
        """
        super().__init__()
        check_vit(encoder)
        stem = encoder.patch_embed
        if encoder.embed_dim % 4 or decoder_embed_dim % 4:
            raise ValueError(
                'sin-cos position embeddings need widths that are multiples of 4, got '
                f'embed_dim {encoder.embed_dim} and decoder_embed_dim {decoder_embed_dim}'
            )
        if not sensors:
            raise ValueError('sensors must name at least one sensor group')
        for name, in_chans in sensors.items():
            if not name or '.' in name or in_chans < 1:
                raise ValueError(
                    f'invalid sensor group {name!r} with {in_chans} bands: names must '
                    'be non-empty without dots, band counts positive'
                )
        self.sensors = dict(sensors)
        self.patch_size = stem.patch_size[0]
        self.embed_dim = encoder.embed_dim
        self.decoder_embed_dim = decoder_embed_dim
        self.norm_pix_loss = norm_pix_loss

        self.patch_embed = nn.ModuleDict(
            {name: sensor_stem(stem, n) for name, n in self.sensors.items()}
        )
        # The stems above replace the encoder's; position embeddings are computed.
        encoder.patch_embed = nn.Identity()
        encoder.pos_embed = None
        self.encoder = encoder

        self.decoder_embed = nn.Linear(self.embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_blocks = nn.Sequential(
            *[
                Block(
                    decoder_embed_dim,
                    decoder_num_heads,
                    mlp_ratio=_DECODER_MLP_RATIO,
                    qkv_bias=True,
                )
                for _ in range(decoder_depth)
            ]
        )
        self.decoder_norm = LayerNorm(decoder_embed_dim)
        self.decoder_pred = nn.ModuleDict(
            {
                name: nn.Linear(decoder_embed_dim, self.patch_size**2 * in_chans)
                for name, in_chans in self.sensors.items()
            }
        )
        self._init_weights()
        if pos_embed == 'learned':
            self.learn_pos_embed()

    def _init_weights(self) -> None:
        """Initialise every weight as MAE's ``initialize_weights``."""
        nn.init.normal_(self._cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        init_weights(self)

    def patchify(self, images: Tensor) -> Tensor:
        """Cut images into flattened patches.

        Args:
            images: ``(B, C, H, W)`` with H and W divisible by the patch size.

        Returns:
            ``(B, L, patch_size**2 * C)``, patches row by row, each flattened as
            ``(row, column, band)`` like MAE's.

        Raises:
            ValueError: If H or W is not divisible by the patch size.
        """
        p = self.patch_size
        batch, chans, height, width = images.shape
        self._check_size(height, width)
        x = images.reshape(batch, chans, height // p, p, width // p, p)
        x = torch.einsum('nchpwq->nhwpqc', x)
        return x.reshape(batch, (height // p) * (width // p), p * p * chans)

    def unpatchify(self, patches: Tensor, size: tuple[int, int]) -> Tensor:
        """Reassemble images from flattened patches, the inverse of :meth:`patchify`.

        Args:
            patches: ``(B, L, patch_size**2 * C)``.
            size: Height and width of the images in pixels.

        Returns:
            ``(B, C, H, W)``.

        Raises:
            ValueError: If the size does not fit the patches.
        """
        p = self.patch_size
        height, width = size
        self._check_size(height, width)
        batch, length, dim = patches.shape
        gh, gw = height // p, width // p
        if length != gh * gw or dim % (p * p):
            raise ValueError(
                f'{length} patches of {dim} values do not make images of {height}x'
                f'{width} pixels with patch size {p}'
            )
        x = patches.reshape(batch, gh, gw, p, p, dim // (p * p))
        x = torch.einsum('nhwpqc->nchpwq', x)
        return x.reshape(batch, -1, height, width)

    def forward_features(self, images: Tensor, sensor: str) -> Tensor:
        """Encode whole images, without masking, for probing and fine-tuning.

        Args:
            images: ``(B, C, H, W)`` of the sensor group.
            sensor: Name of the sensor group.

        Returns:
            Normalised encoder tokens, ``(B, 1 + L, embed_dim)``, class token first.
        """
        return self._encode(self._embed(images, sensor))

    def forward(
        self,
        images: Tensor,
        sensor: str,
        mask_ratio: float = 0.75,
        valid: Tensor | None = None,
    ) -> MAEOutput:
        """Mask patches at random, reconstruct them and compute the loss.

        Args:
            images: ``(B, C, H, W)`` of the sensor group, H and W divisible by the
                patch size.
            sensor: Name of the sensor group.
            mask_ratio: Fraction of the patches to mask.
            valid: ``(B, H, W)`` bool mask of valid pixels; nodata pixels are set to
                0 before encoding and count in neither the loss nor the norm-pix
                statistics. None: every pixel is valid.

        Returns:
            The loss, the predicted patches and the mask.
        """
        if valid is not None:
            # The fill value of nodata never reaches the encoder (issue 11).
            images = torch.where(valid.unsqueeze(1), images, 0.0)
        tokens = self._embed(images, sensor)
        visible, mask, ids_restore = random_masking(tokens, mask_ratio)
        latent = self._encode(visible)
        grid = (
            images.shape[-2] // self.patch_size,
            images.shape[-1] // self.patch_size,
        )
        pred = self._decode(latent, ids_restore, grid, sensor)
        return MAEOutput(self.forward_loss(images, pred, mask, valid), pred, mask)

    def forward_loss(
        self, images: Tensor, pred: Tensor, mask: Tensor, valid: Tensor | None = None
    ) -> Tensor:
        """Mean squared error over the valid pixels of the masked patches.

        Every valid value of a masked patch weighs the same, so with all pixels valid
        this is MAE's loss (the mean over masked patches of each patch's mean error);
        a patch without a valid pixel contributes nothing, and a batch without any
        gives a loss of 0 (and zero gradients), not NaN.

        Args:
            images: ``(B, C, H, W)``, the targets.
            pred: ``(B, L, patch_size**2 * C)`` predicted patches.
            mask: ``(B, L)``, 1 for a masked patch.
            valid: ``(B, H, W)`` bool mask of valid pixels, None when all are; the
                values of invalid pixels are ignored.

        Returns:
            The loss, a float32 scalar.
        """
        target = self.patchify(images).float()
        if valid is None:
            weights = torch.ones_like(target)
        else:
            pixels = valid.unsqueeze(1).expand(-1, images.shape[1], -1, -1)
            weights = self.patchify(pixels.float())
            target = torch.where(weights > 0, target, 0.0)
        if self.norm_pix_loss:
            mean, std = _patch_stats(target, weights)
            target = (target - mean) / std
        errors = ((pred.float() - target).pow(2) * weights).sum(dim=-1)
        counts = weights.sum(dim=-1)
        return (errors * mask).sum() / (counts * mask).sum().clamp_min(1)

    @torch.no_grad()
    def reconstruct(
        self, images: Tensor, sensor: str, mask_ratio: float = 0.75
    ) -> tuple[Tensor, Tensor]:
        """Mask and reconstruct images, in pixel space, for previews.

        As in MAE's visualisation, predictions of a ``norm_pix_loss`` model are
        brought back to pixels with the mean and deviation of the true patches.

        Args:
            images: ``(B, C, H, W)`` of the sensor group.
            sensor: Name of the sensor group.
            mask_ratio: Fraction of the patches to mask.

        Returns:
            The masked images (masked patches set to 0) and the reconstructed images,
            the prediction for every patch (the MAE paper's figures), both
            ``(B, C, H, W)``.
        """
        output = self(images, sensor, mask_ratio)
        pred = output.pred
        if self.norm_pix_loss:
            patches = self.patchify(images).float()
            mean, std = _patch_stats(patches, torch.ones_like(patches))
            pred = pred.float() * std + mean
        size = (images.shape[-2], images.shape[-1])
        pixel_mask = self.unpatchify(output.mask.unsqueeze(-1).expand_as(pred), size)
        masked = images * (1 - pixel_mask.to(images.dtype))
        return masked, self.unpatchify(pred, size).to(images.dtype)

    @property
    def pos_embed_type(self) -> Literal['sincos', 'learned']:
        """``'learned'`` when the encoder has a learned position embedding."""
        return 'sincos' if self.encoder.pos_embed is None else 'learned'

    def learn_pos_embed(self, pos_embed: Tensor | None = None) -> None:
        """Give the encoder a learned absolute position embedding.

        Weights trained with a learned embedding (supervised timm ViTs, fine-tuned
        MAE checkpoints) expect it: dropping it for sin-cos would shift every
        token. It is stored for the nominal grid of the stems
        (``image_size / patch_size``) and resampled to the grid of each batch.

        Args:
            pos_embed: ``(1, 1 + N, D)`` (or ``(1, N, D)``) of a square grid,
                resampled to the nominal grid with timm's ``resample_abs_pos_embed``;
                None starts from the sin-cos embedding (class token zero).

        .. versionadded:: 0.2
        """
        stem = next(iter(self.patch_embed.values()))
        grid = tuple(stem.grid_size)
        if pos_embed is None:
            value = sincos_pos_embed_2d(self.embed_dim, grid, cls_token=True)[None]
        else:
            value = resample_pos_embed(pos_embed.detach().float(), grid)
        self.encoder.pos_embed = nn.Parameter(value.clone())

    @property
    def _cls_token(self) -> nn.Parameter:
        """The encoder's class token, which ``__init__`` checked is there."""
        token = self.encoder.cls_token
        assert token is not None
        return token

    def _check_size(self, height: int, width: int) -> None:
        """Raise ValueError unless an image size is a positive multiple of the patch."""
        p = self.patch_size
        if height < p or width < p or height % p or width % p:
            raise ValueError(
                f'image size {height}x{width} is not a multiple of the patch size {p}'
            )

    def _embed(self, images: Tensor, sensor: str) -> Tensor:
        """Embed the patches of a sensor group and add their position embedding."""
        if sensor not in self.sensors:
            raise ValueError(
                f'unknown sensor group {sensor!r}; known: {list(self.sensors)}'
            )
        if images.ndim != 4 or images.shape[1] != self.sensors[sensor]:
            raise ValueError(
                f'sensor group {sensor!r} takes (B, {self.sensors[sensor]}, H, W) images, '
                f'got shape {tuple(images.shape)}'
            )
        self._check_size(images.shape[-2], images.shape[-1])
        x: Tensor = self.patch_embed[sensor](images)
        batch, gh, gw, dim = x.shape
        pos, _ = patch_pos_embed(
            self.encoder.pos_embed, dim, (gh, gw), device=x.device, dtype=x.dtype
        )
        return x.reshape(batch, gh * gw, dim) + pos

    def _encode(self, tokens: Tensor) -> Tensor:
        """Run patch tokens through the shared encoder, class token first."""
        # MAE's class-token position embedding is zero; a learned one is added.
        cls_token: Tensor = self._cls_token
        if self.encoder.pos_embed is not None:
            cls_token = cls_token + self.encoder.pos_embed[:, :1].to(cls_token.dtype)
        cls_token = cls_token.expand(tokens.shape[0], -1, -1)
        x = self.encoder.norm_pre(torch.cat([cls_token, tokens], dim=1))
        if self.encoder.grad_checkpointing and torch.is_grad_enabled():
            # Honour timm's encoder.set_grad_checkpointing(), as its forward would.
            x = checkpoint_seq(self.encoder.blocks, x)
        else:
            x = self.encoder.blocks(x)
        encoded: Tensor = self.encoder.norm(x)
        return encoded

    def _decode(
        self, latent: Tensor, ids_restore: Tensor, grid: tuple[int, int], sensor: str
    ) -> Tensor:
        """Predict the pixels of every patch from the encoded visible ones."""
        x = self.decoder_embed(latent)
        batch, visible, dim = x.shape
        mask_tokens = self.mask_token.expand(
            batch, ids_restore.shape[1] + 1 - visible, -1
        )
        patches = torch.cat([x[:, 1:], mask_tokens], dim=1)
        patches = patches.gather(1, ids_restore.unsqueeze(-1).expand(-1, -1, dim))
        patches = patches + sincos_pos_embed_2d(
            dim, grid, device=x.device, dtype=x.dtype
        )
        x = torch.cat([x[:, :1], patches], dim=1)
        x = self.decoder_norm(self.decoder_blocks(x))
        pred: Tensor = self.decoder_pred[sensor](x[:, 1:])
        return pred


def check_vit(vit: VisionTransformer) -> None:
    """Check that a timm ViT can be split into sensor stems and shared blocks.

    Args:
        vit: The encoder, e.g. from :func:`~dspt_geo.models.create_encoder`.

    Raises:
        ValueError: If it lacks a class token, has other prefix tokens, or its stem
            is not a plain ``PatchEmbed`` with square patches.
    """
    stem = vit.patch_embed
    if (
        vit.cls_token is None
        or vit.num_prefix_tokens != 1
        or type(stem) is not PatchEmbed
        or not isinstance(stem.norm, nn.Identity)
        or stem.patch_size[0] != stem.patch_size[1]
    ):
        raise ValueError(
            'the encoder must be a timm ViT with a class token, no other prefix '
            'tokens and a plain PatchEmbed stem with square patches'
        )


def sensor_stem(stem: PatchEmbed, in_chans: int) -> PatchEmbed:
    """A sensor group's patch-embedding stem, shaped as a ViT's stem.

    Args:
        stem: The ViT's own stem, for its image, patch size, width and bias.
        in_chans: The group's number of bands.

    Returns:
        A stem taking any multiple of the patch size, returning ``NHWC`` tokens.
    """
    return PatchEmbed(
        img_size=stem.img_size,
        patch_size=stem.patch_size[0],
        in_chans=in_chans,
        embed_dim=stem.proj.out_channels,
        bias=stem.proj.bias is not None,
        strict_img_size=False,
        output_fmt='NHWC',
    )


def init_weights(model: nn.Module) -> None:
    """Initialise stems, linear layers and norms as MAE's ``initialize_weights``.

    Args:
        model: Every submodule of it is initialised.
    """
    for module in model.modules():
        if isinstance(module, PatchEmbed):
            weight = module.proj.weight
            # Like the Linear layers: the convolution is a Linear over a patch.
            nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        elif isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
