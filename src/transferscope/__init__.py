"""transferscope: audit what transfer learning keeps, transfers and breaks.

Layers import only downward: ``data`` -> ``models`` -> ``engine`` -> analyses -> report/cli.
"""

from transferscope.errors import TransferscopeError

__version__ = "0.1.0"

__all__ = ["Finding", "Report", "Study", "TransferscopeError", "__version__", "audit", "check",
           "create_model", "load_model"]

_LAZY = {"Study": "transferscope.studies.run", "Report": "transferscope.report",
         "Finding": "transferscope.findings", "create_model": "transferscope.models",
         "load_model": "transferscope.models", "check": "transferscope.studies.check",
         "audit": "transferscope.studies.audit_memory"}


def __getattr__(name: str):
    """``from transferscope import Study, Report, audit, check, create_model, load_model``,
    imported on first use so ``import transferscope`` stays light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'transferscope' has no attribute {name!r}")
