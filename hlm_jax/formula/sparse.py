"""scipy.sparse on demand. A dense design (every first fit of a small model) never builds a sparse matrix, and
importing scipy.sparse costs 15-30 ms of `import hlm_jax` on this machine (with scipy's shared `_lib`, which
scipy.linalg also pulls in, 0.13-0.16 s): it is imported where a sparse matrix is first built (`scipy_sparse`),
and `issparse` answers without it, since no sparse matrix can exist before scipy.sparse is loaded."""
from __future__ import annotations

import sys


def issparse(x) -> bool:
    """Whether `x` is a scipy sparse matrix or array, without importing scipy.sparse."""
    module = sys.modules.get("scipy.sparse")
    return module is not None and module.issparse(x)


def scipy_sparse():
    """The scipy.sparse module, imported on first use (a lazy import for start-up latency, see above)."""
    import scipy.sparse

    return scipy.sparse
