"""The fine-tuning tasks, named once for labels, models, metrics, files and predict.

Every layer says which task it serves: label readers (:mod:`dspt_geo.data.labels`),
task models (:mod:`dspt_geo.models.tasks`), metrics, the fine-tuned model file's
metadata (:mod:`dspt_geo.models.finetuned`) and prediction. They all take their
names from here, so a new task is added in one place (issue 10).

.. versionadded:: 0.1
"""

from typing import Literal, get_args

__all__ = ('TASKS', 'Task')

#: What a fine-tuned model predicts: one class per window, per pixel, or boxes.
Task = Literal['classify', 'segment', 'detect']

#: The tasks, in the order the command line lists them.
TASKS: tuple[Task, ...] = get_args(Task)
