"""transferscope: audit what transfer learning keeps, transfers and breaks.

Layers import only downward: ``data`` -> ``models`` -> ``engine`` -> analyses -> report/cli.
"""

from transferscope.errors import TransferscopeError

__version__ = "0.1.0"

__all__ = ["TransferscopeError", "__version__"]
