"""Frozen-encoder probes: judge a pre-training run by its features, not its loss.

:func:`probe` embeds labelled chips with each encoder once (cached) and scores
k-NN and logistic-regression classifiers at several label fractions against the
same architecture at random initialisation; with segmentation labels it probes
each patch token and scores mIoU (:mod:`~dspt_geo.probe.segment`).
"""

from .encoders import RANDOM, ProbeEncoder, load_probe_encoder, random_encoder
from .features import (
    POOLS,
    Features,
    Pool,
    TokenFeatures,
    cached_features,
    embed,
    extract_features,
    extract_tokens,
)
from .heads import HEADS, Head, knn_classify, logistic_classify
from .report import format_table, write_plot
from .run import (
    DEFAULT_FRACTIONS,
    DEFAULT_SEEDS,
    METRICS,
    ProbeTask,
    open_probe_data,
    probe,
    summarise,
    write_json,
)
from .segment import mean_iou, score_tokens

__all__ = (
    'DEFAULT_FRACTIONS',
    'DEFAULT_SEEDS',
    'HEADS',
    'METRICS',
    'POOLS',
    'RANDOM',
    'Features',
    'Head',
    'Pool',
    'ProbeEncoder',
    'ProbeTask',
    'TokenFeatures',
    'cached_features',
    'embed',
    'extract_features',
    'extract_tokens',
    'format_table',
    'knn_classify',
    'load_probe_encoder',
    'logistic_classify',
    'mean_iou',
    'open_probe_data',
    'probe',
    'random_encoder',
    'score_tokens',
    'summarise',
    'write_json',
    'write_plot',
)
