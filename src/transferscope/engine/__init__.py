"""Engine: cached batched inference and training runs."""

from transferscope.engine.cache import ResultCache
from transferscope.engine.inference import Predictions, capture, default_cache, predict

__all__ = ["Predictions", "ResultCache", "capture", "default_cache", "predict"]
