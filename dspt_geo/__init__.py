"""dspt-geo: continued MAE pre-training for remote sensing, then fine-tuning.

The library is laid out in the order the data flows: :mod:`dspt_geo.data` (raster
folders, sensor groups, samplers, statistics) feeds :mod:`dspt_geo.models`, which the
Lightning tasks in :mod:`dspt_geo.train` train; :mod:`dspt_geo.predict` writes results.
"""

import logging

__version__ = '0.1.0'

# Library code logs; the command line decides what is shown.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ('__version__',)
