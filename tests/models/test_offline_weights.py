"""Pretrained weights without internet: a quick probe of the weights' host (with a mocked
resolver here - no network is used) makes the one-line error come in seconds instead of
after the hub client's minute of retries; weights already cached still load offline."""

from __future__ import annotations

import socket
import time

import pytest

from transferscope.errors import ModelError
from transferscope.models import _online, create_model


@pytest.fixture
def no_dns(monkeypatch, tmp_path):
    """Every name fails to resolve (as on a machine without network), empty weight caches."""
    real = socket.getaddrinfo
    asked = []

    def fail(host, *args, **kwargs):
        if host in ("127.0.0.1", "localhost"):
            return real(host, *args, **kwargs)
        asked.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                "all_proxy", _online.NO_PROBE_ENV):
        monkeypatch.delenv(var, raising=False)
    return asked


@pytest.mark.parametrize("arch, host", [("timm:resnet18", "huggingface.co"),
                                        ("torchvision:resnet18", "download.pytorch.org"),
                                        ("resnet18", "download.pytorch.org")])
def test_pretrained_weights_without_internet_fail_in_seconds(no_dns, arch, host):
    import timm  # noqa: F401 - imported before the clock starts

    t0 = time.perf_counter()
    with pytest.raises(ModelError) as err:
        create_model(arch, 2, init="imagenet")
    assert time.perf_counter() - t0 < 5.0  # was ~55 s of hub retries for timm
    msg = str(err.value)
    assert f"{host} cannot be resolved" in msg and "--init random" in msg and "\n" not in msg
    assert host in no_dns


def test_cached_timm_weights_still_load_without_internet(no_dns, monkeypatch):
    """Unreachable hub: timm runs in the hub's offline mode, so weights already in the local
    cache load without any request; the mode is restored afterwards."""
    import timm
    from huggingface_hub import constants

    modes, real = [], timm.create_model

    def cached(name, pretrained=False, **kwargs):  # stands in for a cache hit
        modes.append(constants.is_offline_mode())
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", cached)
    model = create_model("timm:resnet18", 2, init="imagenet")
    assert model.arch == "timm:resnet18" and modes == [True]
    assert constants.is_offline_mode() is False


def test_a_resolver_that_hangs_is_given_up_on(monkeypatch):
    monkeypatch.setenv(_online.PROBE_TIMEOUT_ENV, "0.2")
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: time.sleep(3))
    t0 = time.perf_counter()
    why = _online.unreachable("https://huggingface.co")
    assert time.perf_counter() - t0 < 1.0
    assert why == "huggingface.co did not resolve within 0.2 s"


def test_the_probe_connects_and_goes_through_a_proxy(no_dns, monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert _online.unreachable(f"http://127.0.0.1:{port}/") is None
        assert "huggingface.co cannot be resolved" in _online.unreachable(
            "https://huggingface.co")
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        assert _online.unreachable("https://huggingface.co") is None  # the proxy answers
    monkeypatch.delenv("HTTPS_PROXY")
    assert "did not answer" in _online.unreachable(f"http://127.0.0.1:{port}/", timeout=1)
    monkeypatch.setenv(_online.NO_PROBE_ENV, "1")
    assert _online.unreachable("https://huggingface.co") is None


def test_torch_hub_weights_on_disk_need_no_probe(no_dns, tmp_path):
    url = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert not _online.torch_hub_cached(url)
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth").write_bytes(b"x")
    assert _online.torch_hub_cached(url)
