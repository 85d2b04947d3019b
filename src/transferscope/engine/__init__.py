"""Engine: cached batched inference and training runs."""

from transferscope.engine.cache import ResultCache
from transferscope.engine.inference import Predictions, capture, default_cache, predict

__all__ = ["Predictions", "ResultCache", "capture", "default_cache", "predict"]

from transferscope.engine.recipes import RECIPES, Recipe, get_recipe  # noqa: E402
from transferscope.engine.training import TrainConfig, TrainResult, load_run, train  # noqa: E402

__all__ += ["RECIPES", "Recipe", "TrainConfig", "TrainResult", "get_recipe", "load_run", "train"]
