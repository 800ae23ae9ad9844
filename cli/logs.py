"""Logging set-up shared by the commands."""

import logging

__all__ = ('configure_logging', 'route_lightning_logs')


def configure_logging(verbose: int, quiet: bool) -> None:
    """Log to stderr: warnings by default, info with -v, debug with -vv, errors with -q."""
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO)[min(verbose, 1)]
    if verbose >= 2:
        level = logging.DEBUG
    logging.basicConfig(level=level, format='%(levelname)s: %(message)s', force=True)
    # The weight-load report (loaded / new / dropped tensors, band mapping) is one
    # short block that every run shows, unless -q (issue 11).
    logging.getLogger('dspt_geo.models.weights.report').setLevel(
        logging.ERROR if quiet else min(level, logging.INFO)
    )
    # GDAL's own warnings (TIFF tag quirks and the like) only with -vv.
    logging.getLogger('rasterio').setLevel(
        logging.DEBUG if verbose >= 2 else logging.ERROR
    )


def route_lightning_logs() -> None:
    """Send Lightning's logs through our handler, once, after Lightning is imported.

    Lightning installs its own stream handlers (which would print every line twice)
    and logs start-up chatter (accelerators found, tips) at INFO: that is shown with
    -v only.
    """
    root = logging.getLogger()
    for name in ('lightning', 'lightning.pytorch', 'lightning.fabric'):
        lightning_logger = logging.getLogger(name)
        lightning_logger.handlers.clear()
        lightning_logger.propagate = True
        lightning_logger.setLevel(
            root.level if root.level <= logging.INFO else logging.WARNING
        )
    logging.getLogger('lightning.pytorch.utilities.rank_zero').setLevel(
        root.level if root.level <= logging.INFO else logging.WARNING
    )
