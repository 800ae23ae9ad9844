"""Complex SAR samples turned into real-valued backscatter.

Single-look complex (SLC) and other complex rasters store the scattering amplitude
and phase per pixel. A ViT learns from a real-valued backscatter image, so complex
bands are converted as they are read, by one explicit rule for the whole run.
"""

from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

__all__ = ('SAR_MODES', 'SarMode', 'complex_to_backscatter')

#: How a complex band becomes a real one: ``amplitude`` is ``|z|``, ``intensity`` is
#: ``|z|^2`` (linear power) and ``db`` is ``10 log10 |z|^2`` (the same number as
#: amplitude in dB). dB is the default: it tames SAR's heavy-tailed dynamic range,
#: which is what normalisation and a ViT expect.
SarMode = Literal['db', 'amplitude', 'intensity']
SAR_MODES: tuple[str, ...] = get_args(SarMode)


def complex_to_backscatter(
    data: npt.NDArray[np.complexfloating], mode: SarMode = 'db'
) -> npt.NDArray[np.float32]:
    """Convert complex SAR samples into real backscatter.

    A zero sample carries no signal (it is what SAR processors write outside the
    swath), so it becomes NaN, which the data layer treats as nodata.

    Args:
        data: complex array of any shape.
        mode: ``'db'``, ``'amplitude'`` or ``'intensity'``.

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
        case 'db':
            with np.errstate(divide='ignore'):
                out = 10 * np.log10(intensity)
        case _:
            msg = f'unknown SAR mode {mode!r}; use one of {", ".join(SAR_MODES)}'
            raise ValueError(msg)
    out[empty] = np.nan
    return out.astype(np.float32, copy=False)
