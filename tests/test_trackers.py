"""--log-to tensorboard|mlflow: per-epoch training metrics, analysis summaries, figures and the
report, read back from local stores (TensorBoard event files, an MLflow file store)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import write_image
from transferscope.analyses import AnalysisResult
from transferscope.engine import TrainConfig, get_recipe, train
from transferscope.trackers import MLflowTracker, flatten_numbers, open_tracker

SUMMARY = {"fine-tuned": {"recall": 0.75, "classes": 3, "ok": True, "name": "x",
                          "per class": [0.5, float("nan"), 1.0]}}


def _config(root, epochs=2):
    return TrainConfig(arch="baseline_cnn", init="random", data=str(root), seed=0,
                       recipe=get_recipe("paper000-scratch", epochs=epochs, image_size=32,
                                         batch_size=4, lr=1e-3))


def _log_everything(tracker, tiny_split, out: Path) -> list[dict]:
    """Train with the tracker's epoch logger, then log a result with a figure and a report."""
    tracker.log_params({"arch": "baseline_cnn", "recipe": {"epochs": 2}})
    metrics = train(_config(tiny_split), out / "run", on_epoch=tracker.epoch_logger("cnn")
                    ).metrics
    write_image(out / "figures" / "retained__recall.png", (10, 200, 30), size=(30, 20))
    (out / "report.html").write_text("<html>report</html>")
    tracker.log_results(out, {"retained": AnalysisResult("retained", SUMMARY)},
                        out / "report.html")
    tracker.close()
    return metrics


def test_tensorboard_event_files_read_back(tiny_split, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tracker = open_tracker("tensorboard", tmp_path, "tiny")
    metrics = _log_everything(tracker, tiny_split, tmp_path)
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0}).Reload()
    tags = acc.Tags()
    val = acc.Scalars("train/cnn/val_acc")
    assert [e.step for e in val] == [1, 2]
    assert [e.value for e in val] == pytest.approx([m["val_acc"] for m in metrics])
    assert [e.value for e in acc.Scalars("train/cnn/train_loss")] == pytest.approx(
        [m["train_loss"] for m in metrics], rel=1e-6)
    flat = {t for t in tags["scalars"] if t.startswith("retained/")}
    assert flat == {"retained/fine-tuned/recall", "retained/fine-tuned/classes",
                    "retained/fine-tuned/per class/0", "retained/fine-tuned/per class/2"}
    assert acc.Scalars("retained/fine-tuned/recall")[0].value == pytest.approx(0.75)
    image = acc.Images("figures/retained__recall")[0]
    assert (image.width, image.height) == (30, 20)
    # text entries (TensorBoard keeps no files): the report's path and the parameters
    text = {t: acc.Tensors(t)[0].tensor_proto.string_val[0].decode() for t in tags["tensors"]}
    assert text["artifacts/report.html/text_summary"] == str((tmp_path / "report.html").resolve())
    assert '"epochs": 2' in text["params/text_summary"]


def test_mlflow_file_store_read_back(tiny_split, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3: opt in to file stores
    tracker = open_tracker("mlflow", tmp_path, "tiny", uri=f"file:{tmp_path / 'mlruns'}")
    metrics = _log_everything(tracker, tiny_split, tmp_path)
    assert (tmp_path / "mlruns").is_dir()
    client = MlflowClient(tracking_uri=tracker.uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"arch": "baseline_cnn", "recipe.epochs": "2"}
    history = client.get_metric_history(tracker.run_id, "train/cnn/val_loss")
    assert sorted((m.step, m.value) for m in history) == [
        (m["epoch"], pytest.approx(m["val_loss"])) for m in metrics]
    assert run.data.metrics["retained/fine-tuned/per class/2"] == 1.0
    assert "retained/fine-tuned/per class/1" not in run.data.metrics  # NaN: left out
    files = {a.path for a in client.list_artifacts(tracker.run_id)}
    assert files == {"figures", "report.html"}
    assert [a.path for a in client.list_artifacts(tracker.run_id, "figures")] == [
        "figures/retained__recall.png"]


def test_study_and_cli_log_to(tiny_split, tmp_path, capsys):
    """A study file's log_to: every model's epochs, every analysis's numbers, the report."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from transferscope.cli import main

    for wnid, rgb in (("n01440764", (200, 40, 40)), ("n01443537", (40, 200, 40))):
        write_image(tmp_path / "src" / f"{wnid}_0.JPEG", rgb, size=(48, 40))
    study = tmp_path / "study.toml"
    study.write_text(f"""
name = "tracked"
image_size = 32
log_to = "mlflow"
[target]
data = "{tiny_split}"
[source_images]
sets = ["{tmp_path / 'src'}"]
[[models]]
name = "scratch"
arch = "baseline_cnn"
init = "random"
recipe = "paper000-scratch"
epochs = 2
[analyses]
memory = ["retained_knowledge"]
transfer = "none"
transferability = "none"
""")
    out = tmp_path / "out"
    assert main(["audit", str(study), "--out", str(out)]) == 0
    client = MlflowClient(tracking_uri=f"sqlite:///{(out / 'mlflow.db').resolve()}")
    exp = client.get_experiment_by_name("transferscope")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "tracked" and run.data.params["models"]
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/scratch/val_acc")]
    assert steps == [1, 2]
    saved = json.loads((out / "results" / "retained_knowledge.json").read_text())["summary"]
    expected = {MLflowTracker.key(f"retained_knowledge/{k}") for k, _ in flatten_numbers(saved)}
    assert expected and expected <= set(run.data.metrics)
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "report.html" in arts
    figs = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert figs == {f"figures/{p.name}" for p in (out / "figures").glob("retained_knowledge__*")}
    capsys.readouterr()
    args = ["train", "--arch", "baseline_cnn", "--init", "random", "--data", str(tiny_split),
            "--recipe", "paper000-scratch", "--epochs", "2", "--image-size", "32"]
    assert main(args + ["--out", str(tmp_path / "t"), "--log-to", "wandb"]) == 2
    assert "--log-to 'wandb'" in capsys.readouterr().err
    if pytest.importorskip("tensorboard"):
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        assert main(args + ["--out", str(tmp_path / "t"), "--log-to", "tensorboard"]) == 0
        acc = EventAccumulator(str(tmp_path / "t" / "tensorboard")).Reload()
        logged = [e.value for e in acc.Scalars("train/baseline_cnn/val_acc")]
        saved = json.loads((tmp_path / "t" / "metrics.json").read_text())
        assert logged == pytest.approx([m["val_acc"] for m in saved])
