"""Frozen-encoder probes: judge a pre-training run by its features, not its loss.

:func:`probe` embeds labelled chips with each encoder once (cached) and scores
k-NN and logistic-regression classifiers at several label fractions against the
same architecture at random initialisation.
"""

from .encoders import RANDOM, ProbeEncoder, load_probe_encoder, random_encoder
from .features import POOLS, Features, Pool, cached_features, embed, extract_features
from .heads import HEADS, Head, knn_classify, logistic_classify
from .report import format_table, write_plot
from .run import (
    DEFAULT_FRACTIONS,
    DEFAULT_SEEDS,
    open_probe_data,
    probe,
    summarise,
    write_json,
)

__all__ = (
    'DEFAULT_FRACTIONS',
    'DEFAULT_SEEDS',
    'HEADS',
    'POOLS',
    'RANDOM',
    'Features',
    'Head',
    'Pool',
    'ProbeEncoder',
    'cached_features',
    'embed',
    'extract_features',
    'format_table',
    'knn_classify',
    'load_probe_encoder',
    'logistic_classify',
    'open_probe_data',
    'probe',
    'random_encoder',
    'summarise',
    'write_json',
    'write_plot',
)
