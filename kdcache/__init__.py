"""kdcache: run a teacher once, cache its logits, distill many students.

See README.md and docs/ for the user guide, ../docs/store-format.md for the
store layout other teams read.
"""

from __future__ import annotations

__version__ = "0.1.0"

from kdcache.errors import KdcacheError  # noqa: E402

__all__ = ["KdcacheError", "__version__"]
