"""Statistics for verdicts: resampling the independent unit, paired comparisons, tests for
many classes, and the verdict on a paper's claim. Pure functions on arrays; imports nothing
else of transferscope, so every layer may use it.

Example:
    >>> from transferscope.stats import cluster_mean, paired_difference
    >>> cluster_mean([0.2, 0.4, 0.6, 0.8], clusters=["a", "a", "b", "b"], unit="class").n
    2
"""

from transferscope.stats.paired_tests import McNemar, auroc, benjamini_hochberg, mcnemar
from transferscope.stats.resample import (Comparison, Interval, cluster_mean, cluster_statistic,
                                          crossed_statistic, expanded_level, paired_difference,
                                          paired_statistic, plural, sign_flip_p)
from transferscope.stats.verdicts import Verdict, too_few, verdict_of

__all__ = ["Comparison", "Interval", "McNemar", "Verdict", "auroc", "benjamini_hochberg",
           "cluster_mean", "cluster_statistic", "crossed_statistic", "expanded_level", "mcnemar",
           "paired_difference", "paired_statistic", "plural", "sign_flip_p", "too_few", "verdict_of"]
