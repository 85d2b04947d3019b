"""Layer groups per block for any backbone: ResNet blocks, ConvNeXt and Swin stage blocks,
ViT/DeiT blocks, EfficientNet/MobileNet blocks, VGG convolutions, Hugging Face encoders.

The rule, applied from the backbone's root downwards:

* a *block list* is a container (``nn.Sequential``/``nn.ModuleList``, or a module whose
  children are all of one class, like timm's RegNet stages) with at least two children that
  hold parameters, each of them a composite module. Each element becomes a group; an element
  that is itself a block list (an EfficientNet stage) gives one group per sub-element, and an
  element with a block list of blocks inside (a ConvNeXt or Swin stage: downsample + blocks)
  is expanded the same way;
* any other run of children (a stem, a final norm) is split at each ``Conv2d``/``Linear`` or
  composite module, so a conv keeps its norm and activation; a plain ``nn.Sequential`` of
  layers is split the same way, so VGG gets one group per convolution;
* parameters held directly by a module (ViT's ``cls_token`` and ``pos_embed``) join the first
  group below it.

Every parameter lands in exactly one group, names are the groups' dotted paths (unique).

Example:
    >>> import torchvision
    >>> net = torchvision.models.resnet18()
    >>> [g.name for g in auto_groups(net)][:3]
    ['conv1', 'layer1.0', 'layer1.1']
"""

from __future__ import annotations

from torch import nn

from transferscope.models.base import LayerGroup

__all__ = ["auto_groups"]

_SPLIT_AT = (nn.Conv2d, nn.Linear)


def _has_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters())


def _composite(m: nn.Module) -> bool:
    return any(_has_params(c) for c in m.children())


def _param_children(m: nn.Module) -> list[nn.Module]:
    return [c for c in m.children() if _has_params(c)]


def _pools(m: nn.Module) -> bool:
    return "pool" in type(m).__name__.lower() and not isinstance(
        m, (nn.MaxPool2d, nn.AvgPool2d)) or isinstance(m, (nn.Flatten, nn.Identity))


def _is_block_list(m: nn.Module) -> bool:
    kids = _param_children(m)
    if len(kids) < 2 or not all(_composite(c) for c in kids):
        return False
    if isinstance(m, (nn.Sequential, nn.ModuleList)):
        return True
    # a module of one-class children (timm RegNet stage: b1, b2, ...) made of sub-blocks
    return len({type(c) for c in kids}) == 1 and all(
        any(_composite(g) for g in c.children()) for c in kids)


def _holds_blocks(m: nn.Module) -> bool:
    """A stage: a direct child that is a one-class block list of composite blocks."""
    for c in m.children():
        kids = _param_children(c)
        if _is_block_list(c) and len({type(k) for k in kids}) == 1 \
                and all(any(_composite(g) for g in k.children()) for k in kids):
            return True
    return False


def _contains_block_list(m: nn.Module, depth: int = 3) -> bool:
    if depth == 0:
        return False
    return any(_is_block_list(c) or _contains_block_list(c, depth - 1) for c in m.children())


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _expand(m: nn.Module, path: str, out: list[list[str]]) -> None:
    """Append groups (lists of dotted paths, output module last) for ``m``'s children."""
    first = len(out)
    run: list[tuple[str, nn.Module]] = []

    def flush():
        start = len(out)
        members = []
        for name, mod in run:  # a plain Sequential of layers (VGG's features) is inlined
            if isinstance(mod, nn.Sequential) and not any(_composite(c) for c in mod.children()) \
                    and sum(isinstance(c, _SPLIT_AT) for c in mod.children()) >= 2:
                members += [(_join(name, n), c) for n, c in mod.named_children()]
            else:
                members.append((name, mod))
        groups: list[list[tuple[str, nn.Module]]] = [[]]
        for name, mod in members:  # a conv, linear or composite starts a group; norms join
            starts = _has_params(mod) and (_composite(mod) or isinstance(mod, _SPLIT_AT))
            if starts and any(_has_params(x) for _, x in groups[-1]):
                groups.append([])
            groups[-1].append((name, mod))
        for g in groups:
            while g and _pools(g[-1][1]):  # a group's output keeps its spatial/token shape
                g.pop()
            if any(_has_params(x) for _, x in g):
                out.append([n for n, _ in g])
            elif len(out) > start:  # trailing parameter-free layers of this run, but
                # not global pooling: a group's output keeps its spatial/token shape
                out[-1] += [n for n, x in g if not _pools(x)]
        run.clear()

    for name, child in m.named_children():
        cpath = _join(path, name)
        if _is_block_list(child):
            flush()
            for sub_name, sub in child.named_children():
                spath = _join(cpath, sub_name)
                if not _has_params(sub):
                    continue
                if isinstance(sub, (nn.Sequential, nn.ModuleList)) and _is_block_list(sub):
                    out.extend([_join(spath, n)] for n, b in sub.named_children()
                               if _has_params(b))
                elif _holds_blocks(sub):
                    _expand(sub, spath, out)
                else:
                    out.append([spath])
        elif _has_params(child) and _contains_block_list(child):
            flush()
            _expand(child, cpath, out)
        else:
            run.append((cpath, child))
    flush()
    direct = [_join(path, n) for n, _ in m.named_parameters(recurse=False)]
    if direct:
        target = out[first] if len(out) > first else (out[-1] if out else None)
        if target is None:
            out.append(direct + [path] if path else direct)
        else:
            target[:0] = direct  # parameters first: the output module stays last


def auto_groups(backbone: nn.Module, prefix: str = "") -> list[LayerGroup]:
    """Layer groups (without the classifier) of ``backbone``; paths start with ``prefix``.

    The name of a group is the path (inside ``backbone``) of its first module.
    """
    raw: list[list[str]] = []
    _expand(backbone, "", raw)
    modules = dict(backbone.named_modules())
    groups, seen = [], set()
    for paths in raw:
        mods = [p for p in paths if p in modules and p and _has_params(modules[p])]
        name = mods[0] if mods else paths[0]
        if name == "classifier":  # the head group's name
            name = "pre_classifier"
        while name in seen:
            name += "_"
        seen.add(name)
        groups.append(LayerGroup(name, tuple(_join(prefix, p) for p in paths)))
    return groups
