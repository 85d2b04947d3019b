"""Models: the uniform :class:`TransferModel` interface, the registry and the adapter."""

from transferscope.models import zoo as _zoo  # noqa: F401  (registers the architectures)
from transferscope.models.adapter import wrap_module
from transferscope.models.base import ClassifierHead, LayerGroup, TransferModel, compose
from transferscope.models.io import load_model, load_weights_into, save_model
from transferscope.models.registry import (SOURCE_CLASSES, check_model_name, create_model,
                                           get_spec, list_models)
from transferscope.models.sources import SOURCES

__all__ = [
    "ClassifierHead", "LayerGroup", "SOURCES", "SOURCE_CLASSES", "TransferModel",
    "check_model_name", "compose", "create_model", "get_spec", "list_models", "load_model",
    "load_weights_into", "save_model", "wrap_module",
]
