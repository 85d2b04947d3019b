"""Training recipes from the papers, as validated settings that a run records in full."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from transferscope.errors import ConfigError, did_you_mean, validation_line

__all__ = ["get_recipe", "Recipe", "RECIPES"]


class Recipe(BaseModel):
    """Optimiser, schedule and length of a training run (all fields overridable)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "custom"
    source: str = ""
    optimizer: Literal["sgd", "rmsprop", "adam"] = "sgd"
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "step", "multistep", "cosine"] = "constant"
    step_size: int = Field(7, ge=1)
    milestones: list[int] = []
    gamma: float = Field(0.1, gt=0)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    image_size: int = Field(224, ge=8)
    augment: bool = True

    def make_optimizer(self, params) -> torch.optim.Optimizer:
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum,
                                   weight_decay=self.weight_decay)
        if self.optimizer == "rmsprop":
            return torch.optim.RMSprop(params, lr=self.lr, momentum=self.momentum,
                                       weight_decay=self.weight_decay)
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)

    def make_scheduler(self, opt: torch.optim.Optimizer):
        """Stepped once per epoch."""
        if self.schedule == "step":
            return torch.optim.lr_scheduler.StepLR(opt, self.step_size, self.gamma)
        if self.schedule == "multistep":
            return torch.optim.lr_scheduler.MultiStepLR(opt, self.milestones, self.gamma)
        if self.schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(opt, self.epochs)
        return torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)


RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe(name="paper000-finetune", source="paper 000, A.2 Table 3 (RN-18/VGG-16 ImageNet)",
           optimizer="sgd", lr=0.001, momentum=0.9, schedule="step", step_size=7, gamma=0.1,
           epochs=25),
    Recipe(name="paper000-scratch", source="paper 000, A.2 Table 3 (baseline, from scratch)",
           optimizer="rmsprop", lr=1e-4, momentum=0.0, schedule="constant", epochs=50),
    Recipe(name="paper002", source="paper 002, section 4 (SGD, cosine, 100 epochs, batch 128)",
           optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4, schedule="cosine",
           epochs=100, batch_size=128),
    Recipe(name="paper003-constant", source="paper 004, A (CheXpert: constant LR)",
           optimizer="sgd", lr=0.02, momentum=0.9, weight_decay=1e-4, schedule="constant",
           epochs=100),
    Recipe(name="paper003-step", source="paper 004, A (DomainNet: /10 at epochs 30, 60, 90)",
           optimizer="sgd", lr=0.02, momentum=0.9, weight_decay=1e-4, schedule="multistep",
           milestones=[30, 60, 90], epochs=100),
    Recipe(name="quick", source="transferscope: paper 002's optimiser sized for 2 CPU cores",
           optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4, schedule="cosine",
           epochs=6, image_size=160),
]}


def get_recipe(name: str, **overrides) -> Recipe:
    """A named recipe with ``overrides`` (``None`` values ignored) applied and validated."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}{did_you_mean(name, RECIPES)}; known: "
                          f"{', '.join(RECIPES)} (`transferscope recipes`)")
    data = RECIPES[name].model_dump()
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Recipe(**data)
    except ValidationError as exc:
        raise ConfigError(f"recipe {name!r}: {validation_line(exc, 'option')}; "
                          "`transferscope recipes` shows the recipes") from exc
