"""Audit while it trains: :class:`AuditMonitor` for any loop, and callbacks for PyTorch
Lightning (:class:`LightningAuditCallback`, extra ``[lightning]``) and the Hugging Face
``Trainer`` (:class:`HFAuditCallback`, extra ``[hf]``).

The callbacks are imported on first use, so ``import transferscope.callbacks`` needs neither
Lightning nor transformers.
"""

from transferscope.callbacks.metrics import MONITOR_METRICS, register_metric
from transferscope.callbacks.monitor import AuditMonitor, MonitorOptions
from transferscope.analyses.training_curves import read_monitor

__all__ = ["AuditMonitor", "HFAuditCallback", "LightningAuditCallback", "MONITOR_METRICS",
           "MonitorOptions", "read_monitor", "register_metric"]

_LAZY = {"LightningAuditCallback": ("transferscope.callbacks.lightning", "lightning"),
         "HFAuditCallback": ("transferscope.callbacks.hf", "hf")}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, extra = _LAZY[name]
        try:
            return getattr(importlib.import_module(module), name)
        except ImportError as exc:
            raise ImportError(f"{name} needs the [{extra}] extra ({exc.name} is not "
                              f"installed): pip install 'transferscope[{extra}]'") from None
    raise AttributeError(f"module 'transferscope.callbacks' has no attribute {name!r}")
