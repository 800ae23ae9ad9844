"""dspt-geo inside QGIS: the Processing plugin and its installer.

The plugin (folder :data:`PLUGIN_SOURCE`) runs in QGIS's own Python and calls the
dspt-geo command line of this environment in a subprocess; :func:`install_plugin`
puts it into a QGIS profile and records which ``dspt-geo`` executable to call.
"""

import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from ..errors import ConfigError

__all__ = ('PLUGIN_NAME', 'PLUGIN_SOURCE', 'default_profile', 'install_plugin')

logger = logging.getLogger(__name__)

#: The plugin's folder name in a profile (``python/plugins/<name>``).
PLUGIN_NAME = 'dspt_geo_processing'

#: The plugin's source folder, shipped with the package.
PLUGIN_SOURCE = Path(__file__).with_name(PLUGIN_NAME)


def default_profile() -> Path:
    """The default QGIS 3 profile folder of this user and platform.

    ``$QGIS_CUSTOM_CONFIG_PATH`` (as QGIS and qgis_process read it) moves the
    profiles' root.
    """
    custom = os.environ.get('QGIS_CUSTOM_CONFIG_PATH')
    if custom:
        root = Path(custom)
    elif sys.platform == 'win32':
        root = Path(os.environ.get('APPDATA', Path.home())) / 'QGIS' / 'QGIS3'
    elif sys.platform == 'darwin':
        root = Path.home() / 'Library' / 'Application Support' / 'QGIS' / 'QGIS3'
    else:
        root = Path.home() / '.local' / 'share' / 'QGIS' / 'QGIS3'
    return root / 'profiles' / 'default'


def _executable() -> Path:
    """The ``dspt-geo`` script of the running environment."""
    folder = Path(sys.executable).parent
    for name in ('dspt-geo', 'dspt-geo.exe'):
        if (folder / name).is_file():
            return folder / name
    found = shutil.which('dspt-geo')
    if found is None:
        msg = 'cannot find the dspt-geo executable of this environment; reinstall dspt-geo'
        raise ConfigError(msg)
    return Path(found)


def install_plugin(
    profile: str | os.PathLike[str] | None = None, *, link: bool = False
) -> Path:
    """Install the plugin into a QGIS profile, bound to this environment's dspt-geo.

    Args:
        profile: the profile folder (default: :func:`default_profile`).
        link: link the plugin folder to the package instead of copying it (for
            development: edits show after a QGIS restart).

    Returns:
        the installed plugin folder.

    Raises:
        ConfigError: If the profile cannot be written.

    .. versionadded:: 0.2
    """
    profile_dir = Path(profile) if profile is not None else default_profile()
    plugins = profile_dir / 'python' / 'plugins'
    target = plugins / PLUGIN_NAME
    environment = {'executable': str(_executable())}
    try:
        plugins.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f'.{PLUGIN_NAME}.', dir=plugins))
        try:
            if link:
                staged = staging / PLUGIN_NAME
                staged.symlink_to(PLUGIN_SOURCE, target_is_directory=True)
                (PLUGIN_SOURCE / 'environment.json').write_text(json.dumps(environment))
            else:
                staged = staging / PLUGIN_NAME
                shutil.copytree(
                    PLUGIN_SOURCE, staged,
                    ignore=shutil.ignore_patterns('__pycache__', 'environment.json'),
                )  # fmt: skip
                (staged / 'environment.json').write_text(json.dumps(environment))
            if target.is_symlink() or target.is_file():
                target.unlink()
            elif target.exists():
                shutil.rmtree(target)
            staged.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as error:
        msg = f'cannot install the QGIS plugin into {plugins}: {error}'
        raise ConfigError(msg) from error
    logger.info('installed %s (calls %s)', target, environment['executable'])
    return target
