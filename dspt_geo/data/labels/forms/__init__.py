"""One module per form of labels, each opening it as :class:`~..data.LabelledData`.

:func:`~dspt_geo.data.labels.open_labelled` decides the form by documented rules
(see :mod:`dspt_geo.data.labels.api`) and calls the form's ``open_*`` function. To
add a form: a module here with its ``open_*`` function (and a cheap ``matches``
check where the file suffix does not tell), and a rule in the dispatcher.
"""

__all__ = ()
