"""Engine: cached batched inference and training runs."""

from transferscope.engine.cache import ResultCache
from transferscope.engine.device import resolve_device
from transferscope.engine.inference import Predictions, capture, default_cache, predict

__all__ = ["Predictions", "ResultCache", "capture", "default_cache", "predict", "resolve_device"]

from transferscope.engine.recipes import RECIPES, Recipe, get_recipe  # noqa: E402
from transferscope.engine.training import (  # noqa: E402
    TrainConfig, TrainingHook, TrainResult, load_run, train)

__all__ += ["RECIPES", "Recipe", "TrainConfig", "TrainResult", "get_recipe", "load_run", "train"]
