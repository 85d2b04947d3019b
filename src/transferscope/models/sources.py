"""Models by name from other libraries: ``timm:<name>``, ``torchvision:<name>``, ``hf:<folder>``.

Each is split into transferscope's backbone + :class:`ClassifierHead` (the library's final
``nn.Linear`` becomes the head; a copy of the rest is the backbone), gets layer groups per
block (:func:`~transferscope.models.groups.auto_groups`), the preprocessing its library
declares, and a *builder spec* -- ``{"source", "name", "num_classes", "image_size",
"preprocessing", ...}`` -- saved with its weights so :func:`~transferscope.models.load_model`
rebuilds it with no Python.

Example:
    >>> m = create_external("timm:resnet18", 3, init="random", image_size=64)
    >>> m.arch, m.num_classes, m.layer_groups()[1].name
    ('timm:resnet18', 3, 'layer1.0')
"""

from __future__ import annotations

import contextlib
import copy
import json
import socket
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from transferscope.data.transforms import IMAGENET_NORM, Normalization
from transferscope.errors import ConfigError, ModelError
from transferscope.models.base import ClassifierHead, LayerGroup, TransferModel
from transferscope.models.groups import auto_groups

__all__ = ["assemble", "build_hf", "build_timm", "build_torchvision", "check_external_name",
           "check_reachable", "create_external", "find_head", "hf_preprocessing", "HFBackbone",
           "MODEL_SOURCES", "ModelSource", "PRETRAINED", "register_source", "SOURCES",
           "split_classifier", "split_name", "timm_preprocessing", "torchvision_preprocessing"]

@dataclass(frozen=True)
class ModelSource:
    """A library models come from, named by the prefix of ``"<source>:<name>"``.

    Attributes:
        name: the prefix (``"timm"``).
        usage: one line for ``transferscope models``.
        build: ``build(name, num_classes, image_size, pretrained, spec) -> TransferModel``;
            ``spec`` is the saved builder spec when rebuilding (else ``{}``).
        check: ``check(name)`` raises a one-line ConfigError for a name that does not exist
            (called when settings are parsed, before anything trains).
    """

    name: str
    usage: str
    build: Callable[..., TransferModel]
    check: Callable[[str], None] | None = None


#: every model source by prefix; add one with :func:`register_source` (one file)
MODEL_SOURCES: dict[str, ModelSource] = {}


def register_source(name: str, usage: str, build: Callable[..., TransferModel],
                    check: Callable[[str], None] | None = None) -> ModelSource:
    """Register ``"<name>:..."`` model names (see :class:`ModelSource`)."""
    if not name.isidentifier() or name == "registry":
        raise ConfigError(f"model source name {name!r}: use a Python identifier, not 'registry'")
    MODEL_SOURCES[name] = ModelSource(name, usage, build, check)
    return MODEL_SOURCES[name]


class _Usage(Mapping):
    """``SOURCES[name] -> usage line``, read live from :data:`MODEL_SOURCES`."""

    def __getitem__(self, key: str) -> str:
        return MODEL_SOURCES[key].usage

    def __iter__(self):
        return iter(MODEL_SOURCES)

    def __len__(self) -> int:
        return len(MODEL_SOURCES)


SOURCES: Mapping[str, str] = _Usage()
PRETRAINED = ("imagenet", "pretrained")
_INTERP = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL resample codes (HF configs)


def split_name(name: str) -> tuple[str, str]:
    """``"timm:resnet18"`` -> ``("timm", "resnet18")``; no prefix -> ``("registry", name)``."""
    source, sep, rest = str(name).partition(":")
    if sep and source in SOURCES and rest:
        return source, rest
    return "registry", str(name)


def check_external_name(name: str) -> None:
    """One-line :class:`ConfigError` unless ``name`` (``source:rest``) resolves."""
    source, rest = split_name(name)
    found = MODEL_SOURCES.get(source)
    if found is not None and found.check is not None:
        found.check(rest)


def _check_builtin(source: str, rest: str) -> None:
    if source == "timm":
        import timm

        if not timm.is_model(rest):
            near = timm.list_models(f"*{rest[:6]}*")[:5]
            raise ConfigError(f"unknown timm model {rest!r}"
                              + (f"; similar: {', '.join(near)}" if near else "")
                              + " (timm.list_models() lists them)")
    elif source == "torchvision":
        if rest not in _tv_names():
            raise ConfigError(f"unknown torchvision classification model {rest!r}; see "
                              "torchvision.models.list_models(module=torchvision.models)")
    elif source == "hf":
        if not (Path(rest) / "config.json").is_file():
            raise ConfigError(f"hf:{rest}: no Hugging Face model folder there (config.json "
                              "missing); save one with model.save_pretrained(folder)")


def _tv_names() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def find_head(net: nn.Module, hint: str | None = None) -> str:
    """Dotted path of the final ``nn.Linear`` classifier: ``hint`` if it is one, else the
    last ``nn.Linear`` in module order."""
    mods = dict(net.named_modules())
    if hint and isinstance(mods.get(hint), nn.Linear):
        return hint
    linears = [n for n, m in mods.items() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError(f"{type(net).__name__} has no nn.Linear classifier; transferscope "
                         "needs a model whose last layer is a linear classifier")
    return linears[-1]


def split_classifier(net: nn.Module, head: str, *, copy_module: bool = True
                     ) -> tuple[nn.Module, ClassifierHead]:
    """``net`` (a copy unless ``copy_module=False``) with the ``nn.Linear`` at ``head``
    replaced by ``nn.Identity``, and a :class:`ClassifierHead` holding that linear layer."""
    backbone = copy.deepcopy(net) if copy_module else net
    try:
        linear = backbone.get_submodule(head)
    except AttributeError as exc:
        raise ModelError(f"{type(net).__name__} has no sub-module {head!r}; pass head= the "
                         "dotted path of its final nn.Linear") from exc
    if not isinstance(linear, nn.Linear):
        raise ModelError(f"{head!r} of {type(net).__name__} is a {type(linear).__name__}, not "
                         "nn.Linear; pass head= the dotted path of the final nn.Linear")
    parent_path, _, leaf = head.rpartition(".")
    parent = backbone.get_submodule(parent_path) if parent_path else backbone
    setattr(parent, leaf, nn.Identity())
    new_head = ClassifierHead(linear.in_features, linear.out_features)
    new_head.fc = linear
    return backbone, new_head


class HFBackbone(nn.Module):
    """A Hugging Face image classifier (classifier made ``nn.Identity``) as a backbone:
    ``(N, 3, H, W) -> (N, D)``, the features its classifier reads (``.logits`` of the
    headless model, e.g. a ViT's class token after the final norm)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=x)
        return out.logits if hasattr(out, "logits") else out[0]


def assemble(net: nn.Module, head: str, *, arch: str, norm: Normalization, default_size: int,
             builder: dict | None, copy_module: bool = True, hf: bool = False,
             groups: list[LayerGroup] | None = None) -> TransferModel:
    """Split ``net`` at ``head`` and wrap it as a :class:`TransferModel` with block groups."""
    if hf:
        net = HFBackbone(copy.deepcopy(net) if copy_module else net)
        head, copy_module = "model." + head, False
    backbone, new_head = split_classifier(net, head, copy_module=copy_module)
    if groups is None:
        groups = auto_groups(backbone, prefix="backbone")
        if hf:  # names without the wrapper's "model." (paths keep it)
            groups = [LayerGroup(g.name.removeprefix("model."), g.modules) for g in groups]
    groups = list(groups) + [LayerGroup("classifier", ("head",), is_classifier=True)]
    model = TransferModel(backbone, new_head, arch=arch, norm=norm, groups=groups,
                          default_size=default_size)
    if builder is not None:
        builder = {**builder, "head": head, "num_classes": model.num_classes,
                   "image_size": default_size, "preprocessing": norm.as_dict()}
    model.builder = builder
    if hasattr(net, "num_prefix_tokens"):  # timm token models: class/register/dist tokens
        model.num_prefix_tokens = int(net.num_prefix_tokens)
    return model


# ----------------------------------------------------------------------------- preprocessing
def timm_preprocessing(net: nn.Module) -> tuple[Normalization, int]:
    """mean, std, interpolation, crop_pct and input size from timm's ``pretrained_cfg``."""
    cfg = dict(getattr(net, "pretrained_cfg", None) or {})
    if "mean" not in cfg:
        raise ModelError(f"{type(net).__name__} has no timm pretrained_cfg with mean/std; pass "
                         "norm= explicitly")
    interp = cfg.get("interpolation", "bilinear")
    norm = Normalization(tuple(cfg["mean"]), tuple(cfg["std"]),
                         interp if interp in _INTERP.values() else "bilinear",
                         float(cfg.get("crop_pct", 0.875)))
    return norm, int(cfg.get("input_size", (3, 224, 224))[-1])


def torchvision_preprocessing(name: str) -> tuple[Normalization, int]:
    """mean, std, interpolation, crop/resize of the builder's default weights' transforms."""
    import torchvision

    try:
        t = torchvision.models.get_model_weights(name).DEFAULT.transforms()
    except (ValueError, KeyError, AttributeError) as exc:
        raise ModelError(f"torchvision:{name} declares no weights, so no preprocessing; pass "
                         "preprocessing= explicitly") from exc
    crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
    return Normalization(tuple(t.mean), tuple(t.std), t.interpolation.value,
                         min(1.0, crop / resize)), crop


def hf_preprocessing(folder: Path, config) -> tuple[Normalization, int]:
    """mean, std, resample, crop from ``preprocessor_config.json`` (the image processor)."""
    path = folder / "preprocessor_config.json"
    default = int(getattr(config, "image_size", 224) or 224)
    if not path.is_file():
        warnings.warn(f"{folder} has no preprocessor_config.json: assuming ImageNet mean/std "
                      f"at {default}px; save the image processor there or pass preprocessing=",
                      stacklevel=3)
        return IMAGENET_NORM, default
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from exc
    size = cfg.get("size", default)
    side = size if isinstance(size, int) else size.get("shortest_edge") or size.get("height")
    crop = cfg.get("crop_size") if cfg.get("do_center_crop") else None
    crop_side = (crop if isinstance(crop, int) else (crop or {}).get("height")) or side
    crop_pct = cfg.get("crop_pct") or (crop_side / side if crop else 1.0)
    mean, std = cfg.get("image_mean"), cfg.get("image_std")
    if mean is None or std is None:
        raise ModelError(f"{path} has no image_mean/image_std; add them or pass preprocessing=")
    return Normalization(tuple(mean), tuple(std), _INTERP.get(cfg.get("resample", 2), "bilinear"),
                         min(1.0, float(crop_pct))), int(crop_side)


# ----------------------------------------------------------------------------- builders
def _download_error(what: str, exc: Exception) -> ModelError:
    detail = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
    return ModelError(f"could not get the pretrained weights of {what} ({detail}); without "
                      "internet use --init random or --init PATH (a .safetensors/.pt file)")


def _offline_guard():
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(15)
    return old


def _timm_offline(name: str, cfg):
    """Before timm fetches pretrained weights: probe their host (a few seconds at most).
    Unreachable hub: a context running timm in the hub's offline mode (cached weights still
    load) and the reason; unreachable URL not in torch's cache: ModelError at once."""
    from transferscope.models._online import hub_offline, hub_url, torch_hub_cached, unreachable

    d = cfg.to_dict() if cfg is not None else {}
    if d.get("file") or d.get("state_dict"):
        return contextlib.nullcontext(), None
    if d.get("hf_hub_id"):
        why = unreachable(hub_url())
        return (hub_offline() if why else contextlib.nullcontext()), why
    url = d.get("url")
    why = unreachable(url) if url and not torch_hub_cached(url) else None
    if why:
        raise _download_error(f"timm:{name}", ConnectionError(why))
    return contextlib.nullcontext(), None


def check_reachable(url: str, what: str) -> None:
    """ModelError at once when ``url`` (torch.hub weights not cached yet) cannot be reached."""
    from transferscope.models._online import torch_hub_cached, unreachable

    why = None if torch_hub_cached(url) else unreachable(url)
    if why:
        raise _download_error(what, ConnectionError(why))


def build_timm(name: str, num_classes: int, image_size: int | None, pretrained: bool):
    import timm

    cfg = timm.get_pretrained_cfg(name)
    kwargs = {}
    if image_size and cfg is not None and cfg.to_dict().get("fixed_input_size"):
        kwargs["img_size"] = image_size  # ViT/DeiT/Swin: position embeddings for this size
    offline, why = _timm_offline(name, cfg) if pretrained else (contextlib.nullcontext(), None)
    old = _offline_guard()
    try:
        with offline:
            net = timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as exc:
        if pretrained:  # offline and not cached: say why the hub was not asked
            raise _download_error(f"timm:{name}", ConnectionError(why) if why else exc
                                  ) from exc
        raise ModelError(f"timm:{name} could not be built ({str(exc).splitlines()[0]})") from exc
    finally:
        socket.setdefaulttimeout(old)
    if isinstance(cfg_cls := net.pretrained_cfg.get("classifier"), (tuple, list)):
        raise ModelError(f"timm:{name} has {len(cfg_cls)} classifier heads (distilled); use "
                         "its single-head variant")
    norm, size = timm_preprocessing(net)
    size = image_size or size  # an explicit size wins over the pretrained config's
    model = assemble(net, find_head(net, net.pretrained_cfg.get("classifier")),
                     arch=f"timm:{name}", norm=norm, default_size=size,
                     builder={"source": "timm", "name": name}, copy_module=False)
    if cfg is not None and cfg.to_dict().get("fixed_input_size"):
        model.backbone.image_size = size  # fixed input size (TransferModel.fixed_size)
        model.builder["fixed_size"] = True
    return model


def build_torchvision(name: str, num_classes: int, image_size: int | None, pretrained: bool):
    import torchvision

    kwargs = {"image_size": image_size} if image_size and name.startswith("vit_") else {}
    if pretrained:
        try:
            url = torchvision.models.get_model_weights(name).DEFAULT.url
        except Exception:  # noqa: BLE001 - an unknown name fails below, as before
            url = None
        if url:
            check_reachable(url, f"torchvision:{name}")
    old = _offline_guard()
    try:
        net = torchvision.models.get_model(name, weights="DEFAULT" if pretrained else None,
                                           **kwargs)
    except Exception as exc:
        if pretrained:
            raise _download_error(f"torchvision:{name}", exc) from exc
        raise ModelError(f"torchvision:{name} could not be built "
                         f"({str(exc).splitlines()[0]})") from exc
    finally:
        socket.setdefaulttimeout(old)
    norm, size = torchvision_preprocessing(name)
    model = assemble(net, find_head(net), arch=f"torchvision:{name}", norm=norm,
                     default_size=image_size or size,
                     builder={"source": "torchvision", "name": name}, copy_module=False)
    if kwargs:
        model.backbone.image_size = image_size
        model.builder["fixed_size"] = True
    return model


def build_hf(folder: str, pretrained: bool, hf_config: dict | None = None):
    try:
        from transformers import AutoConfig, AutoModelForImageClassification
    except ImportError as exc:
        raise ModelError("hf: models need transformers: pip install 'transferscope[hf]'") from exc
    path = Path(folder)
    if hf_config is not None:  # rebuilt from a saved builder spec: no folder needed
        config = AutoConfig.for_model(**hf_config)
        net = AutoModelForImageClassification.from_config(config)
        norm, size = IMAGENET_NORM, int(getattr(config, "image_size", 224) or 224)
    else:
        check_external_name(f"hf:{folder}")
        try:
            if pretrained:
                net = AutoModelForImageClassification.from_pretrained(str(path))
            else:
                net = AutoModelForImageClassification.from_config(
                    AutoConfig.from_pretrained(str(path)))
        except Exception as exc:
            raise ModelError(f"hf:{folder} could not be loaded "
                             f"({str(exc).splitlines()[0][:160]})") from exc
        norm, size = hf_preprocessing(path, net.config)
    head = find_head(net, "classifier")
    cfg = net.config.to_dict()
    model = assemble(net, head, arch=f"hf:{folder}", norm=norm, default_size=size, hf=True,
                     builder={"source": "hf", "name": str(folder), "hf_config": cfg},
                     copy_module=False)
    return model


def create_external(arch: str, num_classes: int | None, *, init="random",
                    image_size: int | None = None, spec: dict | None = None
                    ) -> TransferModel:
    """Build a ``<source>:<name>`` model through its :class:`ModelSource`; ``init``
    ``"imagenet"``/``"pretrained"`` asks the library for its weights, anything else builds
    random weights (the caller loads a weights file afterwards). ``spec``: the saved builder
    spec when rebuilding a saved model. The head is replaced by a fresh one when
    ``num_classes`` differs from the library model's."""
    source, name = split_name(arch)
    if source not in MODEL_SOURCES:
        raise ConfigError(f"unknown model source in {arch!r}; use one of {', '.join(SOURCES)}")
    if spec is None:
        check_external_name(arch)
    model = MODEL_SOURCES[source].build(name, num_classes, image_size, str(init) in PRETRAINED,
                                        spec or {})
    if num_classes is not None and num_classes != model.num_classes:
        model.reset_classifier(num_classes)
        model.builder["num_classes"] = num_classes
    return model


register_source("timm", "timm:<name>  any timm model (timm.list_models()), e.g. "
                "timm:convnext_atto",
                lambda name, n, size, pretrained, spec: build_timm(name, n, size, pretrained),
                lambda rest: _check_builtin("timm", rest))
register_source("torchvision", "torchvision:<name>  any classification builder in "
                "torchvision.models, e.g. torchvision:mobilenet_v3_small",
                lambda name, n, size, pretrained, spec: build_torchvision(name, n, size,
                                                                          pretrained),
                lambda rest: _check_builtin("torchvision", rest))
register_source("hf", "hf:<folder>  a Hugging Face image classifier saved with save_pretrained "
                "(pip install 'transferscope[hf]')",
                lambda name, n, size, pretrained, spec: build_hf(name, pretrained,
                                                                 spec.get("hf_config")),
                lambda rest: _check_builtin("hf", rest))
