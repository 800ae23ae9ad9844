"""SAR samples turned into the backscatter scale the model learns from.

A ViT learns from a real-valued backscatter image whose values are spread evenly
enough for a per-band mean and standard deviation to normalise them. SAR products
store backscatter in one of four scales: complex samples (SLC), linear power
(sigma0/gamma0/beta0 intensity, float), amplitude (the square root of power, e.g.
Sentinel-1 GRD's uint16 digital numbers) or decibels. Linear power and amplitude are
heavy-tailed over several decades, so SAR groups are converted as they are read,
by one rule for the whole run (issue 11).

Which groups are SAR, and in which scale they are stored, is decided by
:func:`detect_sar_scale`:

* complex samples are SAR;
* a real-valued group is SAR when its band names (band descriptions, else the
  file names) name polarisations: ``VV``, ``VH``, ``HH``, ``HV`` as a word of the
  name, e.g. ``VV``, ``Sigma0_VH``, ``s1a_iw_vv_grd_db.tif``;
* its scale follows from the values (valid pixels of a sample of its files): any
  negative value in more than 1 % of them, or a negative median, means **dB**;
  integers mean **amplitude** (digital numbers); floats with a median above 1 mean
  amplitude too (digital numbers stored as floats); other floats, mostly in
  (0, 1] with a heavy tail, mean **linear power**.

``--sar-mode`` chooses the scale the model sees (:class:`SarConversion`):
``auto`` and ``db`` give dB (``10 log10`` of power, ``20 log10`` of amplitude,
``10 log10 |z|^2`` of complex samples, dB kept as stored); ``amplitude`` and
``intensity`` give linear amplitude or power. The decision travels in the model
files, so that fine-tuning and prediction convert alike.
"""

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt
import rasterio

__all__ = (
    'POLARISATIONS',
    'SAR_MODES',
    'SAR_SCALES',
    'SarConversion',
    'SarMode',
    'SarScale',
    'complex_to_backscatter',
    'detect_sar_scale',
    'names_polarisation',
    'sar_conversion',
    'scale_of_values',
)

logger = logging.getLogger(__name__)

#: What ``--sar-mode`` takes: the backscatter scale the model sees. ``auto`` is dB
#: (it tames SAR's heavy-tailed dynamic range, which is what normalisation and a
#: ViT expect); ``amplitude`` is ``|z|`` (linear amplitude); ``intensity`` is
#: ``|z|^2`` (linear power).
SarMode = Literal['auto', 'db', 'amplitude', 'intensity']
SAR_MODES: tuple[str, ...] = get_args(SarMode)

#: How a SAR group stores its backscatter: complex samples, linear power
#: (``intensity``), ``amplitude`` or ``db``.
SarScale = Literal['complex', 'intensity', 'amplitude', 'db']
SAR_SCALES: tuple[str, ...] = get_args(SarScale)

#: Polarisation names that mark a band as SAR backscatter.
POLARISATIONS = frozenset({'VV', 'VH', 'HH', 'HV'})

#: Words of a band or file name: split at anything but letters and digits.
_WORDS = re.compile(r'[^A-Za-z0-9]+')

#: Share of negative values above which a real SAR group is read as dB.
_DB_NEGATIVE_SHARE = 0.01

#: Largest median of float linear power; above it floats are amplitude numbers.
_POWER_MAX_MEDIAN = 1.0

#: Side of the decimated read per file that the values' scale is judged on.
_SAMPLE_SIDE = 256

#: Files per group read to judge the scale.
_SAMPLE_FILES = 4

#: What each scale is called in messages.
_SCALE_NAMES = {
    'complex': 'complex samples',
    'intensity': 'linear power',
    'amplitude': 'amplitude',
    'db': 'dB',
}


@dataclass(frozen=True)
class SarConversion:
    """How one SAR group's stored values become the backscatter the model sees.

    Attributes:
        scale: how the files store backscatter (:data:`SarScale`).
        mode: the scale the model sees: ``'db'``, ``'amplitude'`` or
            ``'intensity'``.

    .. versionadded:: 0.2
    """

    scale: SarScale
    mode: Literal['db', 'amplitude', 'intensity']

    def __post_init__(self) -> None:
        """Check the two scales.

        Raises:
            ValueError: If either is unknown.
        """
        if self.scale not in SAR_SCALES:
            msg = (
                f'unknown SAR scale {self.scale!r}; use one of {", ".join(SAR_SCALES)}'
            )
            raise ValueError(msg)
        if self.mode not in SAR_MODES or self.mode == 'auto':
            msg = f'unknown SAR mode {self.mode!r}; use db, amplitude or intensity'
            raise ValueError(msg)

    def __str__(self) -> str:
        """E.g. ``'linear power -> dB (10 log10)'``."""
        return f'{_SCALE_NAMES[self.scale]} -> {self.describe_formula()}'

    def describe_formula(self) -> str:
        """The conversion as a formula, e.g. ``'dB (10 log10)'``."""
        if self.scale == self.mode:
            return f'{_SCALE_NAMES[self.mode]} (as stored)'
        formulas = {
            ('complex', 'db'): '10 log10 |z|^2',
            ('complex', 'amplitude'): '|z|',
            ('complex', 'intensity'): '|z|^2',
            ('intensity', 'db'): '10 log10',
            ('intensity', 'amplitude'): 'sqrt',
            ('amplitude', 'db'): '20 log10',
            ('amplitude', 'intensity'): 'square',
            ('db', 'intensity'): '10^(x/10)',
            ('db', 'amplitude'): '10^(x/20)',
        }
        return f'{_SCALE_NAMES[self.mode]} ({formulas[self.scale, self.mode]})'

    def apply(
        self, data: npt.NDArray[Any], nodata: float | None = None
    ) -> npt.NDArray[np.float32]:
        """Convert stored samples.

        Samples that carry no signal become NaN, which the data layer treats as
        nodata: zero complex samples (what SAR processors write outside the
        swath), non-positive linear power or amplitude, and *nodata*.

        Args:
            data: stored samples, any shape.
            nodata: the stored nodata value, if any.

        Returns:
            float32 array of the same shape.
        """
        if self.scale == 'complex':
            return complex_to_backscatter(data, self.mode)
        values = data.astype(np.float32)  # a copy: the caller's array is kept
        missing = ~np.isfinite(values)
        if nodata is not None and not np.isnan(nodata):
            missing |= data == nodata
        if self.scale != 'db':
            missing |= values <= 0
        values[missing] = np.nan
        with np.errstate(invalid='ignore', divide='ignore'):
            match self.scale, self.mode:
                case ('intensity', 'db'):
                    values = 10 * np.log10(values)
                case ('intensity', 'amplitude'):
                    values = np.sqrt(values)
                case ('amplitude', 'db'):
                    values = 20 * np.log10(values)
                case ('amplitude', 'intensity'):
                    values = np.square(values)
                case ('db', 'intensity'):
                    values = np.power(np.float32(10), values / 10)
                case ('db', 'amplitude'):
                    values = np.power(np.float32(10), values / 20)
        return values.astype(np.float32, copy=False)

    def to_dict(self) -> dict[str, str]:
        """The JSON form stored in model files: ``{'sar_scale', 'sar_mode'}``."""
        return {'sar_scale': self.scale, 'sar_mode': self.mode}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> 'SarConversion | None':
        """Read the model-file form (None when the sensor is not SAR).

        Files written before real-valued SAR was recognised hold ``sar_mode``
        only, for complex SAR.

        Args:
            data: a sensor entry of a model file's metadata.

        Returns:
            the conversion, or None.

        Raises:
            ValueError: If a scale or mode is unknown.
        """
        mode = data.get('sar_mode')
        if mode is None:
            return None
        return cls(scale=data.get('sar_scale') or 'complex', mode=mode)


def sar_conversion(scale: SarScale, mode: SarMode = 'auto') -> SarConversion:
    """The conversion of a SAR group stored in *scale* for ``--sar-mode`` *mode*.

    Args:
        scale: how the group stores backscatter.
        mode: ``'auto'`` (dB), ``'db'``, ``'amplitude'`` or ``'intensity'``.

    Returns:
        the conversion.

    Raises:
        ValueError: If *scale* or *mode* is unknown.
    """
    return SarConversion(scale, 'db' if mode == 'auto' else mode)  # type: ignore[arg-type]


def complex_to_backscatter(
    data: npt.NDArray[np.complexfloating], mode: SarMode = 'db'
) -> npt.NDArray[np.float32]:
    """Convert complex SAR samples into real backscatter.

    A zero sample carries no signal (it is what SAR processors write outside the
    swath), so it becomes NaN, which the data layer treats as nodata.

    Args:
        data: complex array of any shape.
        mode: ``'db'`` (or ``'auto'``), ``'amplitude'`` or ``'intensity'``.

    Returns:
        float32 array of the same shape.

    Raises:
        ValueError: If *mode* is not one of :data:`SAR_MODES`.
    """
    intensity = np.square(data.real, dtype=np.float32) + np.square(
        data.imag, dtype=np.float32
    )
    empty = intensity == 0
    match mode:
        case 'intensity':
            out = intensity
        case 'amplitude':
            out = np.sqrt(intensity)
        case 'db' | 'auto':
            with np.errstate(divide='ignore'):
                out = 10 * np.log10(intensity)
        case _:
            msg = f'unknown SAR mode {mode!r}; use one of {", ".join(SAR_MODES)}'
            raise ValueError(msg)
    out[empty] = np.nan
    return out.astype(np.float32, copy=False)


def names_polarisation(name: str) -> bool:
    """Whether a band or file name has a polarisation (VV, VH, HH, HV) as a word.

    Args:
        name: a band description or a file name.

    Returns:
        True for e.g. ``'VV'``, ``'Sigma0_VH'``, ``'s1a_iw_vv_grd_db.tif'``.
    """
    return any(word.upper() in POLARISATIONS for word in _WORDS.split(name))


def detect_sar_scale(
    dtype: str,
    band_names: Sequence[str],
    paths: Sequence[str],
    nodata: float | None = None,
) -> SarScale | None:
    """Tell whether a group of rasters is SAR and how it stores backscatter.

    The rule is the module's: complex samples are SAR; a real-valued group is
    SAR when its band names, else every file name, name polarisations; its scale
    follows from the values of a decimated read of up to four files.

    Args:
        dtype: numpy name of the stored data type.
        band_names: band names the files give (empty when none).
        paths: the group's files (for band-per-file items, the band files).
        nodata: the group's nodata value, left out of the values.

    Returns:
        ``'complex'``, ``'intensity'``, ``'amplitude'`` or ``'db'``, or None when
        the group is not SAR.
    """
    kind = np.dtype(dtype).kind
    if kind == 'c':
        return 'complex'
    if kind not in 'iuf':
        return None
    named = (
        all(names_polarisation(name) for name in band_names)
        if band_names
        else bool(paths)
        and all(names_polarisation(os.path.basename(path)) for path in paths)
    )
    if not named:
        return None
    values = _sample_values(paths, nodata)
    if values.size == 0:
        logger.warning(
            'SAR rasters %s hold no valid value to judge their scale by; reading '
            'them as amplitude',
            ', '.join(paths[:_SAMPLE_FILES]),
        )
        return 'amplitude'
    return scale_of_values(values, integer=kind in 'iu')


def scale_of_values(values: npt.NDArray[Any], *, integer: bool) -> SarScale:
    """The scale of real SAR values, by the module's rule.

    Args:
        values: valid (finite, not nodata) stored values.
        integer: whether the stored data type is an integer.

    Returns:
        ``'db'``, ``'amplitude'`` or ``'intensity'``.
    """
    negative = float(np.mean(values < 0))
    median = float(np.median(values))
    if negative > _DB_NEGATIVE_SHARE or median < 0:
        return 'db'
    if integer or median > _POWER_MAX_MEDIAN:
        return 'amplitude'
    return 'intensity'


def _sample_values(paths: Sequence[str], nodata: float | None) -> npt.NDArray[Any]:
    """Valid values of a decimated read of the first files (overviews if any)."""
    chunks = []
    for path in paths[:_SAMPLE_FILES]:
        with rasterio.open(path) as src:
            scale = max(1.0, max(src.width, src.height) / _SAMPLE_SIDE)
            shape = (
                src.count,
                max(1, round(src.height / scale)),
                max(1, round(src.width / scale)),
            )
            data = src.read(out_shape=shape).ravel()
            declared = nodata if nodata is not None else src.nodata
        valid = (
            np.isfinite(data) if data.dtype.kind == 'f' else np.ones_like(data, bool)
        )
        if declared is not None and not np.isnan(declared):
            valid &= data != declared
        chunks.append(data[valid])
    return np.concatenate(chunks) if chunks else np.empty(0)
