"""Freed memory kept for reuse: glibc's malloc thresholds for torch's CPU work.

Torch allocates CPU tensors with the C library's ``malloc``. glibc serves large
requests by ``mmap`` and returns the free top of its heap to the system once more
than ``M_TRIM_THRESHOLD`` bytes are free (both thresholds adapt to the program,
within 32 and 64 MB). A model's activations are allocated and freed on every
call, so the same megabytes are handed back and faulted in again, page by page,
call after call. Issue 16, the fine-tuned tiny ViT + UperNet over the SpaceNet
sample's 361 windows of 64 px, 32 per call, idle 2-core CPU: 70,000-78,000 page
faults per pass and 468-507 ms; with the thresholds below, none and 344-360 ms.

:func:`keep_freed_memory` raises both thresholds for the process, unless the user
chose an allocator or its settings (``MALLOC_*`` or ``GLIBC_TUNABLES`` environment
variables, a preloaded jemalloc, tcmalloc or mimalloc) or the C library is not
glibc. ``dspt-geo predict`` calls it; training does not (its loop ran as fast
either way, issue 16). Memory a run frees
then stays with the process until it ends (up to :data:`TRIM_THRESHOLD` of it),
as with the allocators PyTorch's CPU tuning guide recommends.
"""

import ctypes
import ctypes.util
import logging
import os
import platform

__all__ = ('MMAP_THRESHOLD', 'TRIM_THRESHOLD', 'keep_freed_memory')

logger = logging.getLogger(__name__)

#: Requests from this size on still get their own mapping.
MMAP_THRESHOLD = 64 * 2**20

#: Free memory at the heap's top kept before any is returned to the system.
TRIM_THRESHOLD = 512 * 2**20

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_USER_SETTINGS = (
    'MALLOC_MMAP_THRESHOLD_',
    'MALLOC_TRIM_THRESHOLD_',
    'MALLOC_TOP_PAD_',
    'GLIBC_TUNABLES',
)


def keep_freed_memory() -> bool:
    """Let glibc keep freed memory for the process's next allocations.

    Returns:
        whether the thresholds were set (False: not glibc, or the user configured
        the allocator).

    .. versionadded:: 0.1
    """
    if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
        return False
    preloaded = os.environ.get('LD_PRELOAD', '')
    if any(os.environ.get(name) for name in _USER_SETTINGS) or any(
        allocator in preloaded for allocator in ('jemalloc', 'tcmalloc', 'mimalloc')
    ):
        logger.debug('malloc configured by the environment; left as it is')
        return False
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    done = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    logger.debug('glibc malloc thresholds raised: %s', done)
    return done
