"""Device selection: resolve_device, --device on the CLI, device= in the API, AMP precisions."""

from __future__ import annotations

import pytest
import torch

from transferscope.cli import main
from transferscope.engine.device import amp_dtype, check_amp, resolve_device
from transferscope.errors import ConfigError


def test_resolve_device_cpu_auto_and_bad_names(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") == resolve_device(None)
    for bad, msg in (("cuda", "no CUDA GPU"), ("cuda:0", "no CUDA GPU"), ("tpu", "one of"),
                     ("cuda:x", "one of")):
        with pytest.raises(ConfigError, match=msg) as err:
            resolve_device(bad)
        assert "\n" not in str(err.value)


def test_auto_prefers_cuda_and_checks_the_index(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device(" CUDA ") == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match="2 CUDA GPU"):
        resolve_device("cuda:2")


def test_precisions():
    assert amp_dtype("fp32") is None and amp_dtype("fp16") is torch.float16
    with pytest.raises(ConfigError, match="precision"):
        amp_dtype("int8")
    with pytest.raises(ConfigError, match="needs a GPU"):
        check_amp("fp16", torch.device("cpu"))
    check_amp("bf16", torch.device("cpu"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
@pytest.mark.parametrize("cmd", [
    ["train", "--arch", "timm:resnet18", "--data", "nowhere", "--out", "OUT", "--device", "cuda"],
    ["evaluate", "--model", "resnet18", "--data", "nowhere", "--device", "cuda"],
    ["audit-memory", "--model", "a=b", "--out", "OUT", "--device", "cuda:0"],
])
def test_cli_device_cuda_without_gpu_is_one_line_exit_2(cmd, tmp_path, capsys):
    cmd = [str(tmp_path / "out") if c == "OUT" else c for c in cmd]
    assert main(cmd) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: device 'cuda") and err.count("\n") == 1
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_predict_and_gradcam_take_a_device(tmp_path):
    from PIL import Image

    from transferscope.data import image_folder
    from transferscope.engine import ResultCache, predict
    from transferscope.engine.attribution import gradcam
    from transferscope.models import create_model

    for c in ("a", "b"):
        (tmp_path / "d" / c).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (40, 40), (60 * i, 100, 30)).save(tmp_path / "d" / c / f"{i}.png")
    ds = image_folder(tmp_path / "d")
    m = create_model("baseline_cnn", 2, image_size=32)
    cache = ResultCache(enabled=False)
    p = predict(m, ds, image_size=32, cache=cache, device="cpu")
    assert p.logits.shape == (4, 2) and p.logits.device.type == "cpu"
    assert gradcam(m, ds, image_size=32, cache=cache, device="cpu").shape == (4, 8, 8)
    with pytest.raises(ConfigError, match="device"):
        predict(m, ds, image_size=32, cache=cache, device="cuda:7" if not
                torch.cuda.is_available() else "tpu")
    with pytest.raises(ConfigError, match="needs a GPU"):
        predict(m, ds, image_size=32, cache=cache, device="cpu", precision="fp16")


def test_study_device_is_checked_at_parse_time():
    from transferscope.studies.spec import parse_study

    text = '[target]\ndata = "x"\n[[models]]\nname = "a"\narch = "resnet18"\n'
    assert parse_study(text).device == "auto"
    with pytest.raises(ConfigError, match="key 'device'"):
        parse_study('device = "tpu"\n' + text)


@pytest.mark.parametrize("precision, message", [
    ("fp16", "precision fp16 needs a GPU"), ("fp8", "--precision must be fp32, bf16 or fp16")])
def test_train_precision_is_checked_before_the_run_exists(precision, message, tiny_split,
                                                          tmp_path, capsys):
    """fp16 autocast (with loss scaling) is for CUDA; on the CPU one line, no run folder."""
    rc = main(["train", "--arch", "baseline_cnn", "--init", "random", "--data", str(tiny_split),
               "--out", str(tmp_path / "run"), "--precision", precision, "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()
