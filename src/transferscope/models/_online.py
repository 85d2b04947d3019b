"""A quick look at the network before pretrained weights are fetched.

Without internet, the Hugging Face hub client retries every request with back-off (about a
minute for one timm model) before it gives up. :func:`unreachable` instead resolves the
weights' host and opens one TCP connection, each within :func:`probe_timeout` seconds
(``TRANSFERSCOPE_PROBE_TIMEOUT``, default 3); when that fails, the builders ask timm in the
hub's offline mode (weights already in the local cache still load) or fail at once with one
line. ``TRANSFERSCOPE_NO_PROBE=1`` skips the probe (the libraries' own retries apply).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["hub_offline", "hub_url", "NO_PROBE_ENV", "probe_timeout", "PROBE_TIMEOUT_ENV",
           "torch_hub_cached", "unreachable"]

PROBE_TIMEOUT_ENV = "TRANSFERSCOPE_PROBE_TIMEOUT"
NO_PROBE_ENV = "TRANSFERSCOPE_NO_PROBE"


def probe_timeout() -> float:
    """Seconds each step of the probe may take (``$TRANSFERSCOPE_PROBE_TIMEOUT``, default 3)."""
    try:
        return max(0.05, float(os.environ.get(PROBE_TIMEOUT_ENV, "3")))
    except ValueError:
        return 3.0


def _target(url: str) -> tuple[str, int]:
    """Host and port a request for ``url`` connects to (its proxy's, when one is set)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(host):
        p = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return p.hostname or "", p.port or 80
    return host, parts.port or (443 if parts.scheme == "https" else 80)


def unreachable(url: str, timeout: float | None = None) -> str | None:
    """Why ``url``'s host (or the proxy in between) cannot be reached, or None when it
    resolves and accepts a TCP connection within ``timeout`` seconds per step.

    Example:
        >>> unreachable("http://127.0.0.1:9/", timeout=1) is not None  # nothing listens
        True
    """
    if os.environ.get(NO_PROBE_ENV, "") in ("1", "true", "yes"):
        return None
    timeout = probe_timeout() if timeout is None else timeout
    host, port = _target(url)
    if not host:
        return None
    found: dict = {}

    def resolve():  # getaddrinfo has no timeout of its own: wait for it in a thread
        try:
            found["addrs"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            found["error"] = exc

    worker = threading.Thread(target=resolve, daemon=True, name=f"resolve {host}")
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        return f"{host} did not resolve within {timeout:g} s"
    if "error" in found:
        return f"{host} cannot be resolved: {found['error']}"
    last: OSError | None = None
    for family, kind, proto, _, addr in found["addrs"][:3]:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(timeout)
                sock.connect(addr)
            return None
        except OSError as exc:
            last = exc
    return f"{host}:{port} did not answer within {timeout:g} s ({last})"


def hub_url() -> str:
    """The Hugging Face hub endpoint timm downloads from (``$HF_ENDPOINT`` honoured)."""
    try:
        from huggingface_hub import constants

        return constants.ENDPOINT
    except Exception:  # noqa: BLE001 - no hub client: timm falls back to plain URLs
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def torch_hub_cached(url: str) -> bool:
    """Whether ``torch.hub.load_state_dict_from_url(url)`` finds the file on disk already."""
    import torch

    name = os.path.basename(urlsplit(url).path)
    return bool(name) and (Path(torch.hub.get_dir()) / "checkpoints" / name).is_file()


@contextlib.contextmanager
def hub_offline():
    """The hub client in offline mode: cached files load, nothing is requested (no retries)."""
    try:
        from huggingface_hub import constants
    except Exception:  # noqa: BLE001
        yield
        return
    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old
