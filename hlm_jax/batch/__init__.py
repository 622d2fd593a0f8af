"""Many fits in one program: per-group OLS (lmlist), the parametric bootstrap, the bootstrap
likelihood-ratio test (pb_test) and one model fitted to many data sets (fit_many).

How the batched fits are fast (see shared/BATCHING.md):

* Only y changes between bootstrap replicates, so the per-group ZᵀZ, ZᵀX and XᵀX are computed
  once and each replicate needs only Zᵀy, Xᵀy, yᵀy, simulated directly (`simulate`).
* The criterion is `likelihood.sums`: elementwise per-group terms and an exact split-chain-rule
  Hessian in closed form; the optimiser is `optimize.minimize_queue`: a fixed number of slots
  take Newton steps together and a slot whose problem finished is refilled from a queue, so no
  slot idles behind a straggler and the step compiles once.
* Replicate i's random numbers come from fold_in(key, i): results do not depend on chunk sizes
  or the number of devices. Chunks are padded to fixed power-of-two sizes, so repeated calls
  reuse the compiled program; the batch axis is sharded over all devices (shard_map over a Mesh).
"""
from .bootstrap import bootstrap
from .fitmany import fit_many
from .lmlist import lmlist
from .pbtest import pb_test
from .results import BatchWarning, BootstrapResult, LmList, PBTest

__all__ = ["bootstrap", "pb_test", "lmlist", "fit_many", "BootstrapResult", "PBTest", "LmList", "BatchWarning"]
