"""``dspt-geo qgis-plugin``: the QGIS Processing provider."""

import click


@click.group('qgis-plugin')
def qgis_plugin() -> None:
    """Install dspt-geo's QGIS Processing provider (Predict scene, Evaluate, Inspect).

    The plugin runs in QGIS and calls this environment's dspt-geo in a subprocess.
    """


@qgis_plugin.command()
@click.option(
    '--profile',
    type=click.Path(file_okay=False),
    help='QGIS profile folder (default: the default profile of this user, or '
    '$QGIS_CUSTOM_CONFIG_PATH/profiles/default).',
)
@click.option(
    '--link',
    is_flag=True,
    help='Link the plugin to the installed package instead of copying it (development).',
)
def install(profile: str | None, link: bool) -> None:
    """Install the plugin into a QGIS profile, bound to this environment's dspt-geo.

    Then enable it in QGIS (Plugins > Manage and Install Plugins > Installed >
    dspt-geo), or for qgis_process: qgis_process plugins enable dspt_geo_processing.
    The algorithms appear in the Processing toolbox under dspt-geo.
    """
    from dspt_geo.qgis import PLUGIN_NAME, install_plugin

    target = install_plugin(profile, link=link)
    click.echo(str(target))
    click.echo(
        f'Enable it in QGIS (Plugins > Manage and Install Plugins > Installed > '
        f'dspt-geo) or run: qgis_process plugins enable {PLUGIN_NAME}',
        err=True,
    )
