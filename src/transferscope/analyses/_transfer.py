"""Inputs shared by the what-is-transferred analyses (papers 003/004), built once per context.

The models are the target models of the source architecture with role P-T
(labelled ``P-T #1``, ``P-T #2``, ...) and RI-T (``RI-T #1``, ...); their initial
weights come from their run directories. Validation batches are decoded once and shared.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from transferscope import roles
from transferscope._io import tensors_sha256
from transferscope.analyses.context import AuditContext
from transferscope.data import eval_transform
from transferscope.errors import ConfigError
from transferscope.models.base import TransferModel

__all__ = ["batches", "cache_key", "eval_and_bn", "merge", "PAIRS", "split_indices", "subset",
           "train_subset", "transfer_inputs", "TransferInputs"]

PAIRS = (("P-T #1", "P-T #2"), ("RI-T #1", "RI-T #2"), ("P-T #1", "RI-T #1"),
         ("P-T #2", "RI-T #2"))


@dataclass
class TransferInputs:
    """P-T / RI-T models by label, their initial states, the pairs to compare."""

    models: dict[str, TransferModel]
    inits: dict[str, dict[str, torch.Tensor]]
    pairs: list[tuple[str, str]]

    @property
    def first(self) -> TransferModel:
        """The model whose layer groups name the modules (all share one architecture)."""
        return next(iter(self.models.values()))


def transfer_inputs(ctx: AuditContext) -> TransferInputs:
    """The P-T and RI-T models of ``ctx`` (ConfigError when there are none)."""

    def build() -> TransferInputs:
        from transferscope.engine import load_run

        pt, rit = ctx.with_role(roles.PT), ctx.with_role(roles.RIT)
        if not pt and not rit:
            raise ConfigError("papers 003/004 need models of the source architecture trained "
                              "from 'imagenet' (P-T) or 'random' (RI-T) init")
        label = {**{n: f"P-T #{i + 1}" for i, n in enumerate(pt)},
                 **{n: f"RI-T #{i + 1}" for i, n in enumerate(rit)}}
        models = {label[n]: ctx.targets[n] for n in pt + rit}
        inits = {label[n]: load_run(ctx.entries[n].run_dir, "init").state_dict()
                 for n in pt + rit if ctx.entries[n].run_dir is not None}
        pairs = [p for p in PAIRS if p[0] in models and p[1] in models]
        return TransferInputs(models, inits, pairs)

    return ctx.memoize("transfer_inputs", build)


def cache_key(ctx: AuditContext) -> dict:
    """Everything the what-is-transferred results depend on besides their options."""
    inp = transfer_inputs(ctx)
    return {"models": {k: m.weights_hash() for k, m in inp.models.items()},
            "source": ctx.source.weights_hash(), "data": ctx.target_data.digest,
            "size": ctx.image_size,
            "batch": ctx.batch_size,  # BatchNorm re-estimation averages per-batch statistics
            "inits": {k: tensors_sha256(v) for k, v in inp.inits.items()},
            "train": ctx.target_train_data.digest if ctx.target_train_data is not None
            else None}


def batches(ctx: AuditContext) -> list:
    """The target validation set as decoded ``(x, y)`` batches, once per context."""
    return ctx.memoize("batches", lambda: list(torch.utils.data.DataLoader(
        ctx.target_data.with_transform(eval_transform(ctx.source.norm, ctx.image_size)),
        batch_size=ctx.batch_size)))


def _sample(ctx: AuditContext, data, images: int, seed: int, tag: str) -> list:
    """A seeded sample of ``images`` images of ``data`` across classes (the set is sorted by
    class), as decoded batches, once per context."""

    def build():
        pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
        return list(torch.utils.data.DataLoader(
            data.subset(sorted(pick[:images].tolist())).with_transform(
                eval_transform(ctx.source.norm, ctx.image_size)), batch_size=ctx.batch_size))

    return ctx.memoize(f"{tag}/{images}/{seed}", build)


def subset(ctx: AuditContext, images: int, seed: int) -> list:
    """A seeded sample of ``images`` validation images (see :func:`_sample`)."""
    return _sample(ctx, ctx.target_data, images, seed, "subset")


def train_subset(ctx: AuditContext, images: int, seed: int) -> list:
    """Like :func:`subset` on the target *training* split when the context has it (Definition
    3.2 of paper 003 uses the training loss), else on the validation split."""
    if ctx.target_train_data is None:
        return subset(ctx, images, seed)
    return _sample(ctx, ctx.target_train_data, images, seed, "train_subset")


def split_indices(n_eval_pool: int, n_bn_pool: int, eval_n: int | None, bn_n: int, seed: int,
                  same_pool: bool) -> tuple[list[int], list[int]]:
    """Seeded indices of the evaluation images and of the BatchNorm re-estimation images.

    From two pools (validation and training split) each is a seeded sample of its own pool;
    from one pool they are disjoint slices of one seeded permutation (re-estimation takes at
    most half of the pool). ``eval_n`` None: the whole (remaining) pool. The evaluation
    sample is the same one :func:`subset` draws when the pools differ.

    >>> ev, bn = split_indices(10, 10, None, 3, seed=0, same_pool=True)
    >>> len(ev), len(bn), set(ev) & set(bn)
    (7, 3, set())
    """
    perm = torch.randperm(n_eval_pool, generator=torch.Generator().manual_seed(seed)).tolist()
    if same_pool:
        bn_take = min(bn_n, n_eval_pool // 2)
        ev_take = min(n_eval_pool if eval_n is None else eval_n, n_eval_pool - bn_take)
        return sorted(perm[:ev_take]), sorted(perm[ev_take:ev_take + bn_take])
    ev = list(range(n_eval_pool)) if eval_n is None else sorted(perm[:eval_n])
    other = torch.randperm(n_bn_pool, generator=torch.Generator().manual_seed(seed + 7919))
    return ev, sorted(other[:bn_n].tolist())


def eval_and_bn(ctx: AuditContext, images: int | None, bn_images: int, seed: int,
                split: str = "validation") -> tuple[list, list, dict]:
    """Evaluation batches, BatchNorm re-estimation batches and their sizes: the statistics
    are re-estimated on images that are never evaluated (training images when the context
    has them, else a disjoint part of the validation set).

    ``split``: ``"validation"`` (barriers, basins) or ``"train"`` (criticality: Definition
    3.2's training loss; the validation split stands in when there is none). ``images`` None:
    every image of the split that is not used for re-estimation.
    """
    train = ctx.target_train_data
    ev_data = train if split == "train" and train is not None else ctx.target_data
    bn_data = train if train is not None else ctx.target_data
    same = bn_data is ev_data
    key = f"eval_bn/{split}/{images}/{bn_images}/{seed}"

    def build():
        ev, bn = split_indices(len(ev_data), len(bn_data), images, bn_images, seed, same)
        tf = eval_transform(ctx.source.norm, ctx.image_size)
        load = lambda d, idx: list(torch.utils.data.DataLoader(  # noqa: E731
            d.subset(idx).with_transform(tf), batch_size=ctx.batch_size)) if idx else []
        names = {id(ctx.target_data): "validation", id(train): "training"}
        info = {"evaluation_images": len(ev), "evaluation_split": names[id(ev_data)],
                "bn_images": len(bn), "bn_split": names[id(bn_data)], "bn_seed": seed,
                "disjoint": not same or not set(ev) & set(bn)}
        whole = not same and images is None and ev_data is ctx.target_data
        return batches(ctx) if whole else load(ev_data, ev), load(bn_data, bn), info

    return ctx.memoize(key, build)


def merge(name: str, parts: dict):
    """One result from per-model results (tables get a ``model`` column)."""
    import pandas as pd

    from transferscope.analyses._base import AnalysisResult

    tables: dict[str, list] = {}
    for model, res in parts.items():
        for key, df in res.tables.items():
            tables.setdefault(key, []).append(df.assign(model=model))
    merged = AnalysisResult(name, {m: r.summary for m, r in parts.items()},
                            {k: pd.concat(v, ignore_index=True) for k, v in tables.items()})
    for model, res in parts.items():
        merged.figures.update({f"{k}_{model.replace(' ', '').replace('#', '')}": f
                               for k, f in res.figures.items()})
        merged.notes += [f"{model}: {n}" for n in res.notes]
    return merged
