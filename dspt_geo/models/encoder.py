"""The fine-tuning encoder: one sensor group's stem and the shared ViT.

After continued MAE pre-training (He et al., "Masked Autoencoders Are Scalable Vision
Learners", CVPR 2022, https://arxiv.org/abs/2111.06377), fine-tuning keeps the
encoder and drops the decoder. :class:`SensorEncoder` is that encoder for one sensor
group: the group's patch-embedding stem, the class token, fixed 2-D sin-cos position
embeddings computed for every patch grid, the transformer blocks (with their drop
path) and the final norm. It is made from a timm ViT (:meth:`SensorEncoder.create`)
and filled by :func:`~dspt_geo.models.load_init_weights`, which reads any source
checkpoint straight into its layout, or it takes the modules over from a trained
:class:`~dspt_geo.models.mae.MaskedAutoencoder` (:meth:`SensorEncoder.from_mae`).

:func:`build_encoder` creates and fills one in one call, and an :class:`EncoderSpec`,
plain JSON, rebuilds the same architecture later (:meth:`SensorEncoder.from_spec`),
for example to load a fine-tuned model file for prediction.
"""

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import torch
from timm.layers.patch_embed import PatchEmbed
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .mae import MaskedAutoencoder, check_vit, init_weights, sensor_stem
from .pos_embed import patch_pos_embed, resample_pos_embed, sincos_pos_embed_2d
from .vit import create_encoder
from .weights import LoadReport, load_init_weights, report_logger

__all__ = ('EncoderSpec', 'SensorEncoder', 'build_encoder')


#: Name of the sensor group when none is given.
DEFAULT_SENSOR = 'image'


@dataclass(frozen=True)
class EncoderSpec:
    """Everything needed to rebuild a :class:`SensorEncoder`, as plain JSON.

    .. versionadded:: 0.1
    """

    #: timm ViT name, as given to :func:`~dspt_geo.models.create_encoder`.
    model: str
    #: Number of input bands.
    in_chans: int
    #: Nominal image size in pixels (the encoder takes any multiple of the patch).
    image_size: int
    #: Patch size in pixels.
    patch_size: int
    #: Stochastic depth rate of the blocks.
    drop_path_rate: float = 0.0
    #: Further timm ``VisionTransformer`` arguments (``depth``, ``embed_dim``, ...).
    model_args: dict[str, Any] = field(default_factory=dict)
    #: Name of the sensor group.
    sensor: str = DEFAULT_SENSOR
    #: Band names in input order, if known.
    bands: tuple[str, ...] | None = None
    #: Position embedding: fixed ``'sincos'``, or ``'learned'`` when the starting
    #: weights learned theirs (see :meth:`MaskedAutoencoder.learn_pos_embed`).
    pos_embed: str = 'sincos'

    def to_dict(self) -> dict[str, Any]:
        """Return the spec as a JSON-serialisable dict.

        Returns:
            One entry per field; ``bands`` as a list or None.
        """
        return {
            'model': self.model,
            'in_chans': self.in_chans,
            'image_size': self.image_size,
            'patch_size': self.patch_size,
            'drop_path_rate': self.drop_path_rate,
            'model_args': dict(self.model_args),
            'sensor': self.sensor,
            'bands': None if self.bands is None else list(self.bands),
            'pos_embed': self.pos_embed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> 'EncoderSpec':
        """Read a spec written by :meth:`to_dict`.

        Args:
            data: The dict, e.g. from a model file's JSON metadata.

        Returns:
            The spec.

        Raises:
            ValueError: If keys are missing or unknown.
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        missing = sorted({'model', 'in_chans', 'image_size', 'patch_size'} - set(data))
        if unknown or missing:
            raise ValueError(
                f'invalid encoder spec {dict(data)}: unknown keys {unknown}, missing '
                f'keys {missing}; expected keys {sorted(names)}'
            )
        values = dict(data)
        if values.get('bands') is not None:
            values['bands'] = tuple(values['bands'])
        values['model_args'] = dict(values.get('model_args') or {})
        return cls(**values)


class SensorEncoder(nn.Module):
    """ViT encoder of one sensor group, for fine-tuning.

    State-dict layout (timm's names): ``patch_embed.proj.*`` (the group's stem),
    ``cls_token``, ``norm_pre.*`` (usually empty), ``blocks.N.*``, ``norm.*``.

    Position embeddings are MAE's fixed 2-D sin-cos, computed for the patch grid of
    every batch, so any image size divisible by the patch size works; the class
    token gets none (MAE's is zero). An encoder whose starting weights learned their
    embedding keeps it as ``pos_embed`` (class token first), resampled to the grid
    of every batch.

    .. versionadded:: 0.1
    """

    #: Number of input bands.
    in_chans: int
    #: Patch size in pixels.
    patch_size: int
    #: Width of the tokens.
    embed_dim: int
    #: How to rebuild the encoder, if known (see :meth:`from_spec`).
    spec: EncoderSpec | None
    #: Whether blocks recompute their activations in the backward pass.
    grad_checkpointing: bool

    def __init__(
        self,
        patch_embed: PatchEmbed,
        cls_token: nn.Parameter,
        blocks: nn.Sequential,
        norm: nn.Module,
        *,
        norm_pre: nn.Module | None = None,
        pos_embed: nn.Parameter | None = None,
        spec: EncoderSpec | None = None,
    ) -> None:
        """Assemble an encoder from existing modules, which it shares.

        Usually called through :meth:`from_mae` or :func:`build_encoder`.

        Args:
            patch_embed: A timm ``PatchEmbed`` with square patches and ``NHWC``
                output, as :class:`MaskedAutoencoder` makes.
            cls_token: The class token, ``(1, 1, D)``.
            blocks: The transformer blocks, taking and returning ``(B, N, D)``.
            norm: The final norm.
            norm_pre: A norm before the blocks (timm's ``norm_pre``), if any.
            pos_embed: A learned position embedding ``(1, 1 + N, D)``, or None for
                fixed sin-cos.
            spec: How to rebuild this architecture; the task models need it to
                describe themselves (their ``config()``).

        Raises:
            ValueError: If the stem or the token does not fit.
        """
        super().__init__()
        patch = patch_embed.patch_size
        if patch[0] != patch[1] or patch_embed.output_fmt != 'NHWC':
            raise ValueError(
                'the stem must be a timm PatchEmbed with square patches and NHWC '
                f"output, as MaskedAutoencoder's stems; got patch {patch}, output "
                f'{patch_embed.output_fmt}'
            )
        embed_dim = patch_embed.proj.out_channels
        if cls_token.shape != (1, 1, embed_dim):
            raise ValueError(
                f'the class token must be (1, 1, {embed_dim}), got {tuple(cls_token.shape)}'
            )
        self.in_chans = patch_embed.proj.in_channels
        self.patch_size = patch[0]
        self.embed_dim = embed_dim
        self.spec = spec
        self.grad_checkpointing = False
        self.patch_embed = patch_embed
        self.cls_token = cls_token
        self.norm_pre = nn.Identity() if norm_pre is None else norm_pre
        self.pos_embed = pos_embed
        self.blocks = blocks
        self.norm = norm

    @classmethod
    def from_mae(
        cls, mae: MaskedAutoencoder, sensor: str, *, spec: EncoderSpec | None = None
    ) -> 'SensorEncoder':
        """Take the encoder of one sensor group out of a masked autoencoder.

        The encoder shares its modules and parameters with *mae*: the group's stem
        and the shared blocks. The decoder and the other groups' stems are not used;
        drop *mae* to free them.

        Args:
            mae: The autoencoder, with its weights loaded.
            sensor: The sensor group whose stem to use.
            spec: How to rebuild the architecture; its ``sensor``, ``in_chans`` and
                ``patch_size`` must agree with *mae*.

        Returns:
            The encoder.

        Raises:
            ValueError: If *sensor* is not a group of *mae*, *spec* disagrees with it,
                or its ViT holds parameters that the encoder would leave out.
        """
        if sensor not in mae.sensors:
            raise ValueError(
                f'unknown sensor group {sensor!r}; the autoencoder has {list(mae.sensors)}'
            )
        if spec is not None and (
            spec.sensor != sensor
            or spec.in_chans != mae.sensors[sensor]
            or spec.patch_size != mae.patch_size
        ):
            raise ValueError(
                f'the spec (sensor {spec.sensor!r}, {spec.in_chans} bands, patch '
                f'{spec.patch_size}) does not fit the autoencoder (sensor {sensor!r}, '
                f'{mae.sensors[sensor]} bands, patch {mae.patch_size})'
            )
        vit = mae.encoder
        _check_taken(vit)
        assert vit.cls_token is not None, '_check_taken'
        stem = mae.patch_embed[sensor]
        assert isinstance(stem, PatchEmbed)
        encoder = cls(
            stem,
            vit.cls_token,
            vit.blocks,
            vit.norm,
            norm_pre=vit.norm_pre,
            pos_embed=vit.pos_embed,
            spec=spec,
        )
        encoder.grad_checkpointing = bool(vit.grad_checkpointing)
        return encoder

    @classmethod
    def create(cls, vit: VisionTransformer, spec: EncoderSpec) -> 'SensorEncoder':
        """Make the encoder of one sensor group from a fresh timm ViT.

        The ViT's stem is replaced by one for the group's bands and its position
        embedding by computed sin-cos; the weights are initialised as MAE
        initialises its encoder. Load starting weights afterwards with
        :func:`~dspt_geo.models.load_init_weights`, which reads any source
        checkpoint straight into this layout (issue 10).

        Args:
            vit: A ViT from :func:`~dspt_geo.models.create_encoder`; its blocks
                and norms become the encoder's.
            spec: The architecture; its ``in_chans`` and ``sensor`` name the stem.

        Returns:
            The encoder.

        Raises:
            ValueError: If the ViT cannot be split into a stem and blocks, its width
                is not a multiple of 4, or it disagrees with *spec*.

        .. versionadded:: 0.1
        """
        check_vit(vit)
        stem = vit.patch_embed
        if vit.embed_dim % 4 or stem.patch_size[0] != spec.patch_size:
            raise ValueError(
                f'the ViT (width {vit.embed_dim}, patch {stem.patch_size[0]}) does not '
                f'fit: sin-cos position embeddings need a width that is a multiple '
                f'of 4, and the spec says patch {spec.patch_size}'
            )
        vit.patch_embed = nn.Identity()
        vit.pos_embed = None
        _check_taken(vit)
        assert vit.cls_token is not None, '_check_taken'
        encoder = cls(
            sensor_stem(stem, spec.in_chans),
            vit.cls_token,
            vit.blocks,
            vit.norm,
            norm_pre=vit.norm_pre,
            spec=spec,
        )
        nn.init.normal_(encoder.cls_token, std=0.02)
        init_weights(encoder)
        encoder.grad_checkpointing = bool(vit.grad_checkpointing)
        return encoder

    @classmethod
    def from_spec(cls, spec: EncoderSpec) -> 'SensorEncoder':
        """Build an encoder with random weights from its spec.

        Load weights afterwards with ``load_state_dict``, e.g. from a fine-tuned
        model file.

        Args:
            spec: The architecture, e.g. :attr:`spec` of a trained encoder.

        Returns:
            The encoder, initialised as MAE initialises its encoder.
        """
        vit = create_encoder(
            spec.model,
            in_chans=spec.in_chans,
            img_size=spec.image_size,
            patch_size=spec.patch_size,
            drop_path_rate=spec.drop_path_rate,
            **spec.model_args,
        )
        encoder = cls.create(vit, spec)
        if spec.pos_embed == 'learned':
            encoder.learn_pos_embed()
        return encoder

    @property
    def num_layers(self) -> int:
        """Number of transformer blocks."""
        return len(self.blocks)

    @property
    def pos_embed_type(self) -> Literal['sincos', 'learned']:
        """``'learned'`` when the encoder has a learned position embedding."""
        return 'sincos' if self.pos_embed is None else 'learned'

    def learn_pos_embed(self, pos_embed: Tensor | None = None) -> None:
        """Give the encoder a learned absolute position embedding.

        As :meth:`MaskedAutoencoder.learn_pos_embed`: stored for the stem's nominal
        grid and resampled to the grid of each batch.

        Args:
            pos_embed: ``(1, 1 + N, D)`` (or ``(1, N, D)``) of a square grid,
                resampled to the nominal grid with timm's ``resample_abs_pos_embed``;
                None starts from the sin-cos embedding (class token zero).

        .. versionadded:: 0.1
        """
        grid = tuple(self.patch_embed.grid_size)
        if pos_embed is None:
            value = sincos_pos_embed_2d(self.embed_dim, grid, cls_token=True)[None]
        else:
            value = resample_pos_embed(pos_embed.detach().float(), grid)
        self.pos_embed = nn.Parameter(value.clone())

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass to save memory.

        Args:
            enable: Whether to checkpoint.
        """
        self.grad_checkpointing = enable

    def forward(self, images: Tensor, *, norm: bool = True) -> Tensor:
        """Encode images.

        Args:
            images: ``(B, in_chans, H, W)``, H and W divisible by the patch size.
            norm: Apply the final norm (as MAE's ``forward_features``); without it
                the tokens are the last block's output, which MAE's mean pooling
                normalises after pooling.

        Returns:
            Tokens ``(B, 1 + L, embed_dim)``, class token first, patches row by row.

        Raises:
            ValueError: If the images do not fit the encoder.
        """
        x, _ = self._embed(images)
        for block in self.blocks:
            x = self._run_block(block, x)
        return self.norm(x) if norm else x

    def forward_intermediates(
        self, images: Tensor, indices: Sequence[int], *, norm: bool = False
    ) -> list[Tensor]:
        """Encode images and return the outputs of some blocks as feature maps.

        Blocks after the last requested one are not run.

        Args:
            images: ``(B, in_chans, H, W)``, H and W divisible by the patch size.
            indices: Zero-based block indices, negative ones counting from the end,
                in the order wanted; repeats are allowed.
            norm: Pass every output through the final norm, as timm's
                ``forward_intermediates(norm=True)``.

        Returns:
            One map ``(B, embed_dim, H / patch_size, W / patch_size)`` per index,
            without the class token.

        Raises:
            ValueError: If an index is out of range or the images do not fit.
        """
        depth = self.num_layers
        if not indices or any(not -depth <= i < depth for i in indices):
            raise ValueError(
                f'block indices must be in [{-depth}, {depth}), at least one; got '
                f'{list(indices)}'
            )
        wanted = [i % depth for i in indices]
        x, (gh, gw) = self._embed(images)
        outputs: dict[int, Tensor] = {}
        for i, block in enumerate(self.blocks[: max(wanted) + 1]):
            x = self._run_block(block, x)
            if i in wanted:
                out = self.norm(x) if norm else x
                outputs[i] = (
                    out[:, 1:].transpose(1, 2).reshape(-1, self.embed_dim, gh, gw)
                )
        return [outputs[i] for i in wanted]

    def layer_id(self, name: str) -> int:
        """Layer of a parameter, for layer-wise learning-rate decay (BEiT, MAE).

        Args:
            name: A parameter name of this module, e.g. ``blocks.3.mlp.fc1.weight``.

        Returns:
            0 for the stem, the class token, the position embedding and
            ``norm_pre``; ``i + 1`` for block
            ``i``; ``num_layers + 1`` for the final norm.

        Raises:
            ValueError: If *name* is not a parameter name of the encoder.
        """
        if name in ('cls_token', 'pos_embed') or name.startswith(
            ('patch_embed.', 'norm_pre.')
        ):
            return 0
        if name.startswith('blocks.'):
            index = name.split('.')[1]
            if index.isdigit() and int(index) < self.num_layers:
                return int(index) + 1
        if name.startswith('norm.'):
            return self.num_layers + 1
        raise ValueError(f'{name!r} is not a parameter name of the encoder')

    def _embed(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Embed patches, add position embeddings, prepend the class token."""
        p = self.patch_size
        if images.ndim != 4 or images.shape[1] != self.in_chans:
            raise ValueError(
                f'the encoder takes (B, {self.in_chans}, H, W) images, got shape '
                f'{tuple(images.shape)}'
            )
        height, width = images.shape[-2:]
        if height < p or width < p or height % p or width % p:
            raise ValueError(
                f'image size {height}x{width} is not a multiple of the patch size {p}'
            )
        x: Tensor = self.patch_embed(images)
        batch, gh, gw, dim = x.shape
        pos, cls_pos = patch_pos_embed(
            self.pos_embed, dim, (gh, gw), device=x.device, dtype=x.dtype
        )
        x = x.reshape(batch, gh * gw, dim) + pos
        cls_token = self.cls_token if cls_pos is None else self.cls_token + cls_pos
        x = torch.cat([cls_token.expand(batch, -1, -1), x], dim=1)
        return self.norm_pre(x), (gh, gw)

    def _run_block(self, block: nn.Module, x: Tensor) -> Tensor:
        """Run one block, checkpointed when enabled and training."""
        if self.grad_checkpointing and torch.is_grad_enabled():
            out = checkpoint(block, x, use_reentrant=False)
        else:
            out = block(x)
        assert isinstance(out, Tensor)
        return out


def build_encoder(
    model: str,
    in_chans: int,
    *,
    sensor: str = DEFAULT_SENSOR,
    bands: Sequence[str] | None = None,
    init: str | os.PathLike[str] = 'none',
    image_size: int = 224,
    patch_size: int | None = None,
    drop_path_rate: float = 0.0,
    model_args: Mapping[str, Any] | None = None,
    pos_embed: Literal['auto', 'learned'] = 'auto',
    pretrain_size: int | None = None,
) -> tuple[SensorEncoder, LoadReport]:
    """Create a fine-tuning encoder and load its starting weights.

    The encoder is created by :func:`~dspt_geo.models.create_encoder` and
    :meth:`SensorEncoder.create`, and filled by
    :func:`~dspt_geo.models.load_init_weights` straight in its own layout, so every
    weight source and band adaptation of pre-training applies (a checkpoint's
    decoder is left out).
    From a dspt-geo pre-trained file with several sensor groups, the stem of the
    group named *sensor* is used, else the one whose bands fit *bands* best.

    Args:
        model: timm ViT name, e.g. ``vit_base_patch16_224``.
        in_chans: Number of input bands.
        sensor: Name of the sensor group (pass the pre-training group's name to pick
            its stem from a dspt-geo file).
        bands: Band names in input order, if known; they steer the stem adaptation.
        init: A weights file, a timm name with a pretrained tag cached locally, or
            ``'none'`` (see :func:`~dspt_geo.models.load_init_weights`).
        image_size: Nominal image size in pixels.
        patch_size: Patch size; the model name's when None.
        drop_path_rate: Stochastic depth rate.
        model_args: Further timm ``VisionTransformer`` arguments; JSON values only,
            since the encoder spec stores them.
        pos_embed: ``'auto'`` keeps the kind of position embedding the weights
            bring (fixed sin-cos, or learned when they learned theirs);
            ``'learned'`` makes it a trainable parameter, initialised from the
            sin-cos embedding of the grid the weights were pre-trained on,
            resampled bicubically to *image_size* when that grid differs (MAE's
            fine-tuning), instead of the sin-cos computed for the new grid.
        pretrain_size: Image size the weights were pre-trained at (for
            ``pos_embed='learned'``); None: the timm model's default size when
            *init* brings weights, else *image_size*.

    Returns:
        The encoder and what was loaded into it, in the encoder's key names; the
        report is logged on
        :data:`~dspt_geo.models.weights.report_logger`.

    Raises:
        CheckpointError: If *init* cannot be read or does not fit the architecture.
        ValueError: If an argument is invalid.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       Added *pos_embed* and *pretrain_size*.
    """
    model_args = dict(model_args or {})
    try:
        json.dumps(model_args)
    except TypeError as error:
        raise ValueError(
            f'model_args must hold JSON values only, so that a model file can '
            f'rebuild the encoder: {error}'
        ) from error
    vit = create_encoder(
        model,
        in_chans=in_chans,
        img_size=image_size,
        patch_size=patch_size,
        drop_path_rate=drop_path_rate,
        **model_args,
    )
    spec = EncoderSpec(
        model=model,
        in_chans=in_chans,
        image_size=image_size,
        patch_size=vit.patch_embed.patch_size[0],
        drop_path_rate=drop_path_rate,
        model_args=model_args,
        sensor=sensor,
        bands=None if bands is None else tuple(bands),
    )
    encoder = SensorEncoder.create(vit, spec)
    report = load_init_weights(encoder, init, sensor_bands={sensor: bands}, log=False)
    if pos_embed == 'learned' and encoder.pos_embed is None:
        if pretrain_size is None and report.source != 'none':
            cfg = getattr(vit, 'pretrained_cfg', None) or {}
            pretrain_size = int(cfg.get('input_size', [image_size])[-1])
        grid = (pretrain_size or image_size) // encoder.patch_size
        encoder.learn_pos_embed(
            sincos_pos_embed_2d(encoder.embed_dim, grid, cls_token=True)[None]
        )
    encoder.spec = dataclasses.replace(spec, pos_embed=encoder.pos_embed_type)
    report_logger.info('%s', report)
    return encoder, report


def _check_taken(vit: VisionTransformer) -> None:
    """Refuse a ViT holding parameters that a :class:`SensorEncoder` leaves out."""
    taken = ('cls_token', 'pos_embed', 'norm_pre.', 'blocks.', 'norm.')
    left = [
        name
        for name, _ in vit.named_parameters()
        if not any(name == key or name.startswith(key) for key in taken)
    ]
    if left or vit.cls_token is None:
        raise ValueError(
            f'the ViT has parameters that a SensorEncoder does not use: {left}; '
            'create it with dspt_geo.models.create_encoder'
        )
