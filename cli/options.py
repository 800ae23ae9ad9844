"""Options shared by several commands."""

import click

from dspt_geo.data import SAR_MODES

crs_option = click.option(
    '--crs',
    metavar='CRS',
    help='CRS to sample every sensor group in (EPSG:XXXX, WKT or PROJ); default: '
    'per group, the CRS holding most of its pixels.',
)
res_option = click.option(
    '--res',
    type=click.FloatRange(min=0, min_open=True),
    help='Pixel size to sample at, in CRS units; default: per group, the median '
    'pixel size of its files.',
)
nodata_option = click.option(
    '--nodata',
    type=float,
    help="Nodata value for every file, overriding the files' own.",
)
sar_mode_option = click.option(
    '--sar-mode',
    type=click.Choice(SAR_MODES),
    default='db',
    show_default=True,
    help='How complex SAR bands become real: backscatter in dB, amplitude |z| or '
    'intensity |z|^2.',
)
