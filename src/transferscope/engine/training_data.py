"""What a training run reads and how it is evaluated: paper 002's class/fraction subsets, the
train/val transforms (block shuffling included), per-epoch seeds, the validation pass and
precise BatchNorm. Split from :mod:`transferscope.engine.training`, which runs the loop.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from transferscope.data.transforms import eval_transform, train_transform
from transferscope.engine import distributed
from transferscope.engine.batchnorm import reestimate_bn
from transferscope.engine.device import to_device
from transferscope.models.base import TransferModel

__all__ = ["PRECISE_BN_IMAGES", "select_subset", "training_transforms"]


def select_subset(train_set, val_set, fraction: float = 1.0, max_classes: int | None = None,
                  seed: int = 0):
    """Paper 002's controlled sweeps: keep ``max_classes`` classes (seeded choice, labels
    renumbered, applied to both splits) and a seeded ``fraction`` of each class's training
    images (at least one per class)."""
    if fraction >= 1.0 and (max_classes is None or max_classes >= train_set.num_classes):
        return train_set, val_set
    g = torch.Generator().manual_seed(seed)
    keep = list(range(train_set.num_classes))
    if max_classes is not None and max_classes < len(keep):
        keep = sorted(torch.randperm(len(keep), generator=g)[:max_classes].tolist())
    remap = {old: new for new, old in enumerate(keep)}
    classes = [train_set.classes[c] for c in keep]

    def restrict(ds, frac):
        from transferscope.data.image_set import ImageSet, Sample

        chosen = []
        for c in keep:
            idx = [i for i, s in enumerate(ds.samples) if s.label == c]
            n = max(1, round(frac * len(idx)))
            order = torch.randperm(len(idx), generator=g)[:n].sort().values.tolist()
            chosen += [Sample(ds.samples[idx[i]].path, remap[c], ds.samples[idx[i]].sha256)
                       for i in order]
        chosen.sort(key=lambda s: (s.label, s.path))
        return ImageSet(ds.root, chosen, classes, ds.label_space, ds.skipped, ds.transform)

    return restrict(train_set, fraction), restrict(val_set, 1.0)


def training_transforms(norm, size: int, augment: bool, block_shuffle=None, seed: int = 0):
    """``(train, val)`` transforms of a run.

    With ``block_shuffle`` (paper 003, section 3.1) both are the deterministic resize/crop
    followed by the same seeded block permutation: the paper trains on shuffled images without
    random crops or flips (footnote 3), so ``augment`` is ignored there.
    """
    tf_val = eval_transform(norm, size)
    if block_shuffle is None:
        return (train_transform(norm, size) if augment else tf_val), tf_val
    from torchvision.transforms import v2

    from transferscope.data.shuffle import BlockShuffle

    shuffle = BlockShuffle(block_shuffle, seed=seed)
    return v2.Compose([tf_val, shuffle]), v2.Compose([eval_transform(norm, size), shuffle])


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**63)


def _evaluate(model: TransferModel, loader: DataLoader, channels_last: bool) -> tuple[float, float]:
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    device = next(model.parameters()).device
    with torch.inference_mode():
        for x, y in loader:
            x, y = to_device(x, device), to_device(y, device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = model(x)
            loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            n += len(y)
    loss_sum, correct, n = distributed.sum_across(loss_sum, correct, n)  # under torchrun
    return loss_sum / n, correct / n


PRECISE_BN_IMAGES = 2048


def _recalibrate(model: TransferModel, data, batch_size: int, seed: int,
                 channels_last: bool) -> None:
    """Precise BN: statistics from up to PRECISE_BN_IMAGES training images (eval transform)."""
    n = len(data)
    if n > PRECISE_BN_IMAGES:
        pick = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        data = torch.utils.data.Subset(data, pick[:PRECISE_BN_IMAGES].tolist())
    reestimate_bn(model, DataLoader(data, batch_size=batch_size), channels_last=channels_last,
                  device=next(model.parameters()).device)
