"""Where dspt-geo keeps what it can compute again (statistics, the sample data)."""

import os
from pathlib import Path

__all__ = ('default_cache_dir',)


def default_cache_dir() -> Path:
    """``$DSPT_GEO_CACHE``, else ``$XDG_CACHE_HOME/dspt-geo`` or ``~/.cache/dspt-geo``."""
    if 'DSPT_GEO_CACHE' in os.environ:
        return Path(os.environ['DSPT_GEO_CACHE'])
    base = os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache'
    return Path(base) / 'dspt-geo'
