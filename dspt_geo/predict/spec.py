"""What prediction needs to know about a fine-tuned model: :class:`PredictionSpec`.

The spec is part of the fine-tuned model file's metadata schema, defined once in
:mod:`dspt_geo.models.finetuned` (issue 10); prediction takes it from there.
"""

from ..models.finetuned import DEFAULT_PALETTE, PredictionSpec
from ..task import TASKS, Task

__all__ = ('DEFAULT_PALETTE', 'TASKS', 'PredictionSpec', 'Task')
