"""jaxlab.recipes — the parts several experiments share: configs, method builders, evaluation and plots.

An experiment in ``experiments/`` (or a user's own folder) imports these as
ordinary modules: ``from jaxlab.recipes import toy2d``. Recipes sit above the
trainer (they build :class:`jaxlab.train.TrainConfig` subclasses and call
:func:`jaxlab.train.train`); nothing below the trainer imports them.
"""
