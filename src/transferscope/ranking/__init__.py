"""Pick the source before fine-tuning: transferability scores of candidate models for a
target (:mod:`.scores`) and the ranking of candidates from one forward pass each
(:mod:`.rank`)."""

from transferscope.ranking.rank import (MIN_CANDIDATES, SCORES, check_ranking, rank_candidates,
                                        source_head_reason)
from transferscope.ranking.scores import (FEATURE_SCORES, HEAD_SCORES, gbc, hscore,
                                          hscore_regularised, knn_accuracy, ledoit_wolf, leep,
                                          logme, nce)

__all__ = ["FEATURE_SCORES", "HEAD_SCORES", "MIN_CANDIDATES", "SCORES", "check_ranking", "gbc",
           "hscore", "hscore_regularised", "knn_accuracy", "ledoit_wolf", "leep", "logme", "nce",
           "rank_candidates", "source_head_reason"]
