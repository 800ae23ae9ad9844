"""dspt-geo: continued MAE pre-training for remote sensing, then fine-tuning.

The library is laid out in the order the data flows: :mod:`dspt_geo.data` (raster
folders, sensor groups, samplers, statistics) feeds :mod:`dspt_geo.models`, which the
Lightning tasks in :mod:`dspt_geo.train` train; :mod:`dspt_geo.predict` writes results.
"""

import logging

__version__ = '0.1.0'

# Library code logs; the command line decides what is shown.
logging.getLogger(__name__).addHandler(logging.NullHandler())

#: Logger of the few lines that say what a run will do (its peak learning rate, its
#: class weights), once per run: the command line shows them at its default
#: verbosity, where other INFO lines need -v.
SUMMARY_LOGGER = f'{__name__}.summary'

__all__ = ('SUMMARY_LOGGER', '__version__')
