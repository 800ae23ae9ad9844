"""Logging set-up shared by the commands."""

import logging
import warnings

from dspt_geo import SUMMARY_LOGGER

__all__ = ('configure_logging', 'route_lightning_logs')

#: Third-party warnings that tell a dspt-geo user nothing to act on, as (message
#: pattern, module pattern): shown with -vv only (issue #9).
THIRD_PARTY_NOISE = (
    # Lightning 2.6 calls a pytree API that newer torch deprecates, every step.
    (r'`isinstance\(treespec, LeafSpec\)` is deprecated', r'lightning\.'),
    # A resumed run writes into its own checkpoints/ folder.
    (r'Checkpoint directory .* exists and is not empty', r'lightning\.'),
    # The patch samplers draw by seed and step, and resume where they stopped.
    (r"You're resuming from a checkpoint that ended before the epoch ended", ''),
    # A resumed run with another --checkpoint-every: its periodic checkpoints go on.
    (r'Be aware that when using `ckpt_path`, callbacks used to create', ''),
    # finetune --freeze-encoder keeps the encoder in eval mode on purpose.
    (r'Found \d+ module\(s\) in eval mode at the start of training', ''),
)


def configure_logging(verbose: int, quiet: bool) -> None:
    """Log to stderr: warnings by default, info with -v, debug with -vv, errors with -q.

    A run's summary lines (:data:`dspt_geo.SUMMARY_LOGGER`) show by default too;
    :data:`THIRD_PARTY_NOISE` only with -vv.
    """
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO)[min(verbose, 1)]
    if verbose >= 2:
        level = logging.DEBUG
    logging.basicConfig(level=level, format='%(levelname)s: %(message)s', force=True)
    # The weight-load report (loaded / new / dropped tensors, band mapping) is one
    # short block that every run shows, unless -q (issue 11).
    logging.getLogger('dspt_geo.models.weights.report').setLevel(
        logging.ERROR if quiet else min(level, logging.INFO)
    )
    logging.getLogger(SUMMARY_LOGGER).setLevel(
        level if quiet else min(level, logging.INFO)
    )
    # GDAL's own warnings (TIFF tag quirks and the like) only with -vv.
    logging.getLogger('rasterio').setLevel(
        logging.DEBUG if verbose >= 2 else logging.ERROR
    )
    if verbose < 2:
        for message, module in THIRD_PARTY_NOISE:
            warnings.filterwarnings('ignore', message=message, module=module)


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
