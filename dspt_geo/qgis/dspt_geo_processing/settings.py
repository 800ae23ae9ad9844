"""The plugin's one setting: where the dspt-geo executable is.

Shown in Settings > Options > Processing > Providers > dspt-geo; empty means the
path written by ``dspt-geo qgis-plugin install`` (or ``$DSPT_GEO_EXECUTABLE``, or
``dspt-geo`` on PATH).
"""

from processing.core.ProcessingConfig import ProcessingConfig, Setting

__all__ = ('EXECUTABLE', 'executable', 'register', 'unregister')

#: The setting's key.
EXECUTABLE = 'DSPT_GEO_EXECUTABLE'


def register(provider_name: str) -> None:
    """Add the setting to the Processing options."""
    ProcessingConfig.addSetting(
        Setting(
            provider_name,
            EXECUTABLE,
            'dspt-geo executable (empty: the one the plugin was installed from)',
            '',
            valuetype=Setting.FILE,
        )
    )
    ProcessingConfig.readSettings()


def unregister() -> None:
    """Remove the setting."""
    ProcessingConfig.removeSetting(EXECUTABLE)


def executable() -> str:
    """The configured executable, or '' for the default."""
    return str(ProcessingConfig.getSetting(EXECUTABLE) or '')
