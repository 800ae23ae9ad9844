"""Adapting pre-trained stem and head weights to other bands.

A checkpoint's patch-embedding stem was trained on its bands (RGB, Sentinel-2,
Sentinel-1); a sensor group may have others. The rules, in order:

1. Bands known on both sides are matched by name, case-insensitively and with
   aliases (``B04`` is ``red``). A matched band copies its weights; a band without
   a match gets the mean of the checkpoint's band weights, so that it starts like
   an average band.
2. Otherwise, with as many bands as the checkpoint, the weights are copied in order.
3. Otherwise timm's ``adapt_input_conv`` rule (``timm/models/_manipulate.py``)
   applies: 1 band sums the checkpoint bands, C bands repeat them cyclically (the
   first C when there are fewer) and scale by ``checkpoint bands / C``. Either keeps
   the scale of the stem's response (exactly so for a uniform image with 1 band or
   a multiple of the checkpoint's bands).

A reconstruction head has no response to preserve: it takes the rows of the matched
(or, by rule 2, same-position) bands and keeps its initialisation for the others.
"""

from collections.abc import Sequence

import torch
from timm.models import adapt_input_conv
from torch import Tensor

__all__ = (
    'CHECKPOINT_BANDS',
    'adapt_head',
    'adapt_patch_embed',
    'band_mapping',
    'describe_mapping',
)

#: Bands assumed for a checkpoint's stem, by its number of input channels.
CHECKPOINT_BANDS: dict[int, tuple[str, ...]] = {
    2: ('VV', 'VH'),
    3: ('red', 'green', 'blue'),
    13: (
        'B01', 'B02', 'B03', 'B04', 'B05', 'B06', 'B07',
        'B08', 'B8A', 'B09', 'B10', 'B11', 'B12',
    ),
}  # fmt: skip

#: Band names that mean the same band, lower case, mapped to one spelling.
_ALIASES = {
    'b01': 'coastal',
    'b02': 'blue',
    'b03': 'green',
    'b04': 'red',
    'b05': 'rededge1',
    'b06': 'rededge2',
    'b07': 'rededge3',
    'b08': 'nir',
    'b8a': 'nir08',
    'b09': 'water_vapour',
    'b10': 'cirrus',
    'b11': 'swir16',
    'b12': 'swir22',
    'swir1': 'swir16',
    'swir2': 'swir22',
}


def _canonical(band: str) -> str:
    """One spelling for a band name: lower case, aliases resolved."""
    name = band.strip().lower()
    return _ALIASES.get(name, name)


def band_mapping(
    source: Sequence[str] | None,
    source_count: int,
    bands: Sequence[str] | None,
    count: int,
) -> list[int | None] | None:
    """Find, for every band, the checkpoint band whose weights it takes.

    Args:
        source: The checkpoint's band names, if known.
        source_count: The checkpoint's number of bands.
        bands: The sensor group's band names, if known.
        count: The sensor group's number of bands.

    Returns:
        One checkpoint band index (or None) per band: by name when both sides are
        named and at least one band matches, in order when the counts agree. None
        when neither applies: then :func:`adapt_patch_embed` uses timm's rule.

    .. versionadded:: 0.1
    """
    if source is not None and bands is not None:
        index = {_canonical(band): i for i, band in enumerate(source)}
        mapping = [index.get(_canonical(band)) for band in bands]
        if any(i is not None for i in mapping):
            return mapping
    if source_count == count:
        return list(range(count))
    return None


def adapt_patch_embed(
    weight: Tensor, mapping: list[int | None] | None, count: int
) -> Tensor:
    """Adapt patch-embedding weights ``(D, C, p, p)`` to *count* bands.

    Args:
        weight: The checkpoint's stem weights.
        mapping: From :func:`band_mapping`.
        count: Number of bands of the sensor group.

    Returns:
        Weights ``(D, count, p, p)``.

    .. versionadded:: 0.1
    """
    if mapping is None:
        return adapt_input_conv(count, weight, base_chans=weight.shape[1])
    fill = weight.mean(dim=1)
    return torch.stack([fill if i is None else weight[:, i] for i in mapping], dim=1)


def adapt_head(value: Tensor, initial: Tensor, mapping: list[int | None]) -> Tensor:
    """Adapt a reconstruction-head weight or bias to the sensor group's bands.

    Args:
        value: The checkpoint's tensor, rows ordered ``(pixel, band)`` as MAE's
            ``patchify``.
        initial: The model's tensor, whose rows of unmatched bands are kept.
        mapping: From :func:`band_mapping`.

    Returns:
        A tensor shaped like *initial*.

    .. versionadded:: 0.1
    """
    pixels = initial.shape[0] // len(mapping)
    source = value.reshape(pixels, -1, *value.shape[1:])
    adapted = (
        initial.reshape(pixels, len(mapping), *initial.shape[1:]).to(value).clone()
    )
    for band, i in enumerate(mapping):
        if i is not None:
            adapted[:, band] = source[:, i]
    return adapted.reshape(initial.shape)


def describe_mapping(
    mapping: list[int | None] | None,
    source: Sequence[str] | None,
    bands: Sequence[str] | None,
    source_count: int,
    count: int,
) -> str:
    """Say in words how :func:`adapt_patch_embed` builds the bands.

    Args:
        mapping: From :func:`band_mapping`.
        source: The checkpoint's band names, if known.
        bands: The sensor group's band names, if known.
        source_count: The checkpoint's number of bands.
        count: The sensor group's number of bands.

    Returns:
        One line, e.g. ``'3 -> 4 bands by name: red <- red, ..., nir <- mean ...'``.

    .. versionadded:: 0.1
    """
    if mapping is None:
        if count == 1:
            return f'{source_count} -> 1 band, the sum of the checkpoint bands'
        return (
            f'{source_count} -> {count} bands, the checkpoint bands tiled and scaled by '
            f'{source_count}/{count}'
        )
    if mapping == list(range(source_count)):
        return f'{source_count} bands copied in order'
    assert source is not None and bands is not None  # a partial mapping is by name
    pairs = ', '.join(
        f'{band} <- {"mean of the checkpoint bands" if i is None else source[i]}'
        for band, i in zip(bands, mapping, strict=True)
    )
    return f'{source_count} -> {count} bands by name: {pairs}'
