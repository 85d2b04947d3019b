"""transferscope against the anchors' libraries, each ratio measured in one run.

    /tmp/benchvenv/bin/pip install -r benchmarks/requirements.txt   # separate venv, see RESULTS
    flock /tmp/cpu.lock /tmp/benchvenv/bin/python benchmarks/bench_anchors.py [--only cka,...]

gradcam  batched Grad-CAM (engine.attribution.gradcam_batch) vs pytorch-grad-cam's GradCAM and
         captum's LayerGradCam: efficientnet_lite0 (ImageNet weights), one batch of real
         images, targets = predicted classes. Raw ReLU'd maps at layer resolution are compared
         with captum's; for pytorch-grad-cam (which min-max scales, resizes with cv2 and
         scales again) our raw maps go through its own ``scale_cam_image`` the same way.
cka      linear CKA of every layer group of one resnet18 against every layer group of another
         (9 x 9 pairs, spatially averaged features): analyses.cka.cka_all_pairs (one forward
         pass per batch and model, three GEMMs) vs the per-pair approach of anatome-style CKA
         libraries (for each pair: hook one module per model, run the data, linear CKA).
         Both read the same decoded batches. torch_cka (one pass, but a minibatch unbiased-HSIC
         estimator on flattened features: other values) is timed for context.
landscape  loss-landscapes' linear_interpolation against barriers.evaluate_path_batched
         (same images decoded once, same lambdas, parameters-only end points).
         cka also compares ckatorch: its full-batch linear CKA (our estimator) on the same
         features, values compared, and its minibatch CKA timed.
barrier  25 lambda points on the line between two lite0 weight vectors, hymenoptera/val:
         analyses.barriers.evaluate_path_batched (each batch decoded once; on a list of
         decoded batches, as the studies pass them, states outer) vs a loop of 25 plain
         evaluations (load_state_dict + decode and run the data each time).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from transferscope.analyses import barriers, cka
from transferscope.data import image_folder, source_images
from transferscope.data.transforms import eval_transform
from transferscope.engine.attribution import cam_layer, gradcam_batch
from transferscope.models import create_model


def best_of(fn, repeats: int):
    """(best wall time, last result) of ``repeats`` calls."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def batches(data, size: int, norm, n: int, batch_size: int) -> list[torch.Tensor]:
    loader = DataLoader(data.with_transform(eval_transform(norm, size)), batch_size=batch_size)
    out, seen = [], 0
    for x, _ in loader:
        out.append(x[:n - seen])
        seen += len(out[-1])
        if seen >= n:
            break
    return out


# --------------------------------------------------------------------------- Grad-CAM
def bench_gradcam(args) -> None:
    from captum.attr import LayerGradCam
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = create_model("efficientnet_lite0", 1000, init="imagenet").eval()
    x = batches(source_images("imagenet-samples"), 224, model.norm, args.cam_batch,
                args.cam_batch)[0]
    layer = cam_layer(model)
    module = model.get_submodule(layer)
    with torch.no_grad():
        tgt = model(x).argmax(1)
    size = (x.shape[-1], x.shape[-2])

    def ours():
        return gradcam_batch(model, x, tgt, layer)

    def ours_scaled():  # the same post-processing as pytorch-grad-cam's forward
        return scale_cam_image(scale_cam_image(ours().numpy(), size))

    def captum():
        return LayerGradCam(model, module).attribute(x, target=tgt.tolist(),
                                                     relu_attributions=True).detach()[:, 0]

    def pgc():
        with GradCAM(model=model, target_layers=[module]) as cam:
            return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in tgt])

    runs = {"transferscope gradcam_batch (raw)": ours, "captum LayerGradCam (raw)": captum,
            "transferscope + pytorch-grad-cam scaling": ours_scaled,
            "pytorch-grad-cam GradCAM": pgc}
    times = {k: float("inf") for k in runs}
    outs = {}
    for _ in range(args.repeats):  # interleaved, best of repeats
        for k, fn in runs.items():
            t, outs[k] = best_of(fn, 1)
            times[k] = min(times[k], t)
    raw, ref = outs["transferscope gradcam_batch (raw)"], outs["captum LayerGradCam (raw)"]
    d_captum = float((raw - ref).abs().max())
    d_pgc = float(np.abs(outs["transferscope + pytorch-grad-cam scaling"]
                         - outs["pytorch-grad-cam GradCAM"]).max())
    print(f"\n## Grad-CAM: efficientnet_lite0, {len(x)} images at 224 px, layer {layer} "
          f"{tuple(raw.shape[1:])}, best of {args.repeats}")
    for k, t in times.items():
        print(f"  {k:<44}{t:8.3f} s")
    print(f"  max |ours - captum| (raw, max map value {float(raw.max()):.3g}): {d_captum:.2e}")
    print(f"  max |ours - pytorch-grad-cam| (scaled to [0, 1], 224 px): {d_pgc:.2e}")
    t = list(times.values())
    print(f"  speed-up vs captum: {t[1] / t[0]:.2f}x, vs pytorch-grad-cam: {t[3] / t[2]:.2f}x")


# --------------------------------------------------------------------------- CKA
def per_pair_cka(model_a, model_b, data, layers_a, layers_b) -> np.ndarray:
    """The per-pair approach (anatome's SimilarityHook + linear CKA): for each (i, j), hook
    module i of A and module j of B, run both models over the data, then linear CKA."""
    out = np.zeros((len(layers_a), len(layers_b)))
    for i, la in enumerate(layers_a):
        for j, lb in enumerate(layers_b):
            feats = []
            for model, path in ((model_a, la), (model_b, lb)):
                store = []
                h = model.get_submodule(path).register_forward_hook(
                    lambda m, inp, o, s=store: s.append(o.detach().mean((2, 3))))
                with torch.no_grad():
                    for x in data:
                        model(x)
                h.remove()
                f = torch.cat(store).double()
                feats.append(f - f.mean(0))
            x, y = feats
            out[i, j] = float((y.T @ x).norm() ** 2 / ((x.T @ x).norm() * (y.T @ y).norm()))
    return out


def bench_cka(args) -> None:
    torch.manual_seed(0)
    a = create_model("resnet18", 10).eval()
    torch.manual_seed(1)
    b = create_model("resnet18", 10).eval()
    layers = [g.output_module for g in a.layer_groups(include_classifier=False)]
    data = batches(source_images("imagenet-samples"), args.cka_size, a.norm, args.cka_n, 32)
    t_ours, ours = best_of(lambda: cka.cka_all_pairs(a, b, data, layers, layers, pool="avg"),
                           args.repeats)
    t_ref, ref = best_of(lambda: per_pair_cka(a, b, data, layers, layers), 1)
    diff = float(np.abs(ours.to_numpy() - ref).max())
    print(f"\n## CKA, all {len(layers)}x{len(layers)} layer-group pairs of two resnet18, "
          f"{sum(map(len, data))} images at {args.cka_size} px, spatially averaged features")
    print(f"  transferscope cka_all_pairs (best of {args.repeats}){t_ours:10.3f} s")
    print(f"  per-pair loop (anatome-style, 1 run)     {t_ref:10.3f} s")
    print(f"  max |difference| {diff:.2e}; speed-up {t_ref / t_ours:.1f}x")
    try:
        from torch_cka import CKA
    except ImportError:
        return
    names = [n for n, _ in a.named_modules()]
    loader = DataLoader(TensorDataset(torch.cat(data)), batch_size=32)

    def tcka():
        c = CKA(a, b, model1_layers=layers, model2_layers=layers, device="cpu")
        c.compare(loader)
        return c.export()["CKA"]
    assert all(layer in names for layer in layers)
    try:
        t_tc, vals = best_of(tcka, 1)
    except Exception as e:  # noqa: BLE001 - context only
        print(f"  torch_cka failed: {type(e).__name__}: {e}")
        return
    print(f"  torch_cka.CKA.compare (one pass, minibatch HSIC on flattened features) "
          f"{t_tc:.3f} s; its values differ (other estimator), e.g. diagonal "
          f"{np.round(torch.diagonal(vals).numpy(), 3).tolist()} vs ours (avg) "
          f"{np.round(np.diag(ours.to_numpy()), 3).tolist()}")
    bench_ckatorch(args, a, b, layers, data, ours, t_ours)


def bench_ckatorch(args, a, b, layers, data, ours, t_ours) -> None:
    """ckatorch: its full-batch linear CKA (``core.cka_base``, Kornblith et al.: our
    estimator) on the same spatially averaged features - values compared; and its
    ``CKA(...)(loader, epochs=1)`` (minibatch HSIC_1 on flattened features, Nguyen et al.:
    another estimator) timed."""
    try:
        from ckatorch import CKA as CkaTorch
        from ckatorch.core import cka_base
    except ImportError:
        print("  ckatorch not installed: skipped")
        return

    def features(model):  # one pass, every layer's spatially averaged output
        store = {p: [] for p in layers}
        hooks = [model.get_submodule(p).register_forward_hook(
            lambda m, i, o, k=p: store[k].append(o.detach().mean((2, 3)))) for p in layers]
        with torch.no_grad():
            for x in data:
                model(x)
        for h in hooks:
            h.remove()
        return [torch.cat(store[p]) for p in layers]

    def base_all_pairs():
        fa, fb = features(a), features(b)
        return np.array([[float(cka_base(x, y)) for y in fb] for x in fa])

    t_base, vals = best_of(base_all_pairs, args.repeats)
    diff = float(np.abs(vals - ours.to_numpy()).max())
    print(f"  ckatorch core.cka_base on the same features (one pass per model, then "
          f"{len(layers) ** 2} calls) {t_base:.3f} s (best of {args.repeats}); "
          f"max |difference| to ours {diff:.2e}; ours {t_base / t_ours:.2f}x faster")
    loader = DataLoader(TensorDataset(torch.cat(data)), batch_size=32)

    def minibatch():
        return CkaTorch(a, b, layers, layers, device="cpu")(loader, epochs=1)

    try:
        t_mb, mb = best_of(minibatch, 1)
    except Exception as e:  # noqa: BLE001 - context only
        print(f"  ckatorch CKA(...)(loader) failed: {type(e).__name__}: {e} (its minibatch CKA "
              "takes (batch, tokens, dim) outputs, not convolution feature maps)")
        return
    print(f"  ckatorch CKA(...)(loader, epochs=1) (minibatch HSIC_1, flattened features: "
          f"another estimator) {t_mb:.3f} s, ours {t_mb / t_ours:.2f}x faster; diagonal "
          f"{np.round(torch.diagonal(mb).numpy(), 3).tolist()}")


# --------------------------------------------------------------------------- loss-landscapes
def bench_landscape(args) -> None:
    """loss-landscapes' ``linear_interpolation`` vs ``barriers.evaluate_path_batched`` on the
    same decoded images and the same lambdas. loss-landscapes moves the parameters only
    (BatchNorm statistics stay those of the start model) and evaluates lambda = i/steps,
    i = 1..steps, on one tensor of inputs with autograd on; so the end points here differ in
    their parameters only (same BatchNorm buffers) and both evaluate in eval mode."""
    try:
        import loss_landscapes
        import loss_landscapes.metrics
    except ImportError:
        print("\n## loss-landscapes not installed: skipped")
        return
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", 2, init="imagenet").eval()
    t0 = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    params = dict(model.named_parameters())
    t1 = {k: v + 0.1 * v.std() * torch.randn(v.shape, generator=g)
          if k in params and v.numel() > 1 else v.clone() for k, v in t0.items()}
    data = image_folder("hymenoptera", "val").with_transform(
        eval_transform(model.norm, args.barrier_size))
    x = torch.stack([data[i][0] for i in range(len(data))])
    y = torch.tensor([data[i][1] for i in range(len(data))])
    steps = args.lambdas
    lams = [i / steps for i in range(1, steps + 1)]
    start, end = create_model("efficientnet_lite0", 2).eval(), create_model(
        "efficientnet_lite0", 2).eval()
    start.load_state_dict(t0)
    end.load_state_dict(t1)

    def theirs():
        metric = loss_landscapes.metrics.Loss(torch.nn.CrossEntropyLoss(), x, y)
        return loss_landscapes.linear_interpolation(start, end, metric, steps=steps,
                                                    deepcopy_model=True)

    def ours():
        return barriers.evaluate_path_batched(model, t0, t1, lams, [(x, y)],
                                              channels_last=True)["loss"].to_numpy()

    t_theirs, v_theirs = best_of(theirs, 1)
    t_ours, v_ours = best_of(ours, 1)
    diff = float(np.abs(v_theirs - v_ours).max())
    print(f"\n## Interpolation path: loss-landscapes linear_interpolation vs "
          f"barriers.evaluate_path_batched, efficientnet_lite0, {steps} lambdas, "
          f"{len(x)} hymenoptera/val images at {args.barrier_size} px (decoded once, both)")
    print(f"  loss_landscapes.linear_interpolation {t_theirs:8.2f} s")
    print(f"  transferscope evaluate_path_batched   {t_ours:8.2f} s")
    print(f"  speed-up {t_theirs / t_ours:.2f}x; max |loss difference| {diff:.2e} "
          f"(losses {v_ours.min():.3f}-{v_ours.max():.3f})")


# --------------------------------------------------------------------------- barrier
def bench_barrier(args) -> None:
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", 2, init="imagenet")
    t0 = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    params = dict(model.named_parameters())  # perturb weights, keep BN statistics valid
    t1 = {k: v + 0.1 * v.std() * torch.randn(v.shape, generator=g)
          if k in params and v.numel() > 1 else v.clone() for k, v in t0.items()}
    data = image_folder("hymenoptera", "val").with_transform(
        eval_transform(model.norm, args.barrier_size))
    loader = DataLoader(data, batch_size=32)  # decodes and resizes on every pass
    lams = list(np.linspace(0, 1, args.lambdas))
    t_dec, _ = best_of(lambda: [None for _ in loader], 1)

    def plain_loop():  # what one writes without transferscope
        rows = []
        for lam in lams:
            model.load_state_dict(barriers.interpolate(t0, t1, lam))
            rows.append(barriers.evaluate(model, loader))
        return np.array([[r["loss"], r["accuracy"]] for r in rows])

    runs = {
        "loop of plain evaluations (NCHW)": plain_loop,
        "evaluate_path_batched, NCHW": lambda: barriers.evaluate_path_batched(
            model, t0, t1, lams, loader)[["loss", "accuracy"]].to_numpy(),
        "evaluate_path (loop), channels-last": lambda: barriers.evaluate_path(
            model, t0, t1, lams, loader, channels_last=True)[["loss", "accuracy"]].to_numpy(),
        "evaluate_path_batched, channels-last (barriers.run default)":
            lambda: barriers.evaluate_path_batched(model, t0, t1, lams, loader,
                                                   channels_last=True)[
                ["loss", "accuracy"]].to_numpy(),
        "the same without folding BatchNorm (fold_bn=False)":
            lambda: barriers.evaluate_path_batched(model, t0, t1, lams, loader,
                                                   channels_last=True, fold_bn=False)[
                ["loss", "accuracy"]].to_numpy(),
        "decode once into a list, then barriers.run's path (states outer)":
            lambda: barriers.evaluate_path_batched(model, t0, t1, lams, list(loader),
                                                   channels_last=True)[
                ["loss", "accuracy"]].to_numpy(),
        "the same without folding BatchNorm":
            lambda: barriers.evaluate_path_batched(model, t0, t1, lams, list(loader),
                                                   channels_last=True, fold_bn=False)[
                ["loss", "accuracy"]].to_numpy()}
    times, outs = {}, {}
    for k, fn in runs.items():
        times[k], outs[k] = best_of(fn, 1)
    names = list(runs)
    print(f"\n## Interpolation barrier: efficientnet_lite0, {len(lams)} lambdas, hymenoptera/val "
          f"({len(data)} images at {args.barrier_size} px); one pass of decoding alone "
          f"{t_dec:.2f} s")
    for k in names:
        print(f"  {k:<62}{times[k]:8.2f} s")

    def cmp(i, j):
        d = np.abs(outs[names[i]] - outs[names[j]]).max(0)
        return (f"{times[names[i]] / times[names[j]]:.2f}x, max |d loss| {d[0]:.1e}, "
                f"max |d accuracy| {d[1]:.1e}")
    print(f"  folding BatchNorm (default vs fold_bn=False): {cmp(4, 3)}; on the list: "
          f"{cmp(6, 5)}")
    print(f"  what studies run (decoded list, states outer) vs plain loop: {cmp(0, 5)}")
    print(f"  batched vs loop, both NCHW:          {cmp(0, 1)}")
    print(f"  batched vs loop, both channels-last: {cmp(2, 3)}")
    print(f"  batched channels-last vs plain loop: {cmp(0, 3)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="gradcam,cka,barrier,landscape")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cam-batch", type=int, default=32)
    ap.add_argument("--cka-n", type=int, default=64)
    ap.add_argument("--cka-size", type=int, default=112)
    ap.add_argument("--lambdas", type=int, default=25)
    ap.add_argument("--barrier-size", type=int, default=128)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for part in args.only.split(","):
        {"gradcam": bench_gradcam, "cka": bench_cka, "barrier": bench_barrier,
         "landscape": bench_landscape}[part](args)


if __name__ == "__main__":
    main()
