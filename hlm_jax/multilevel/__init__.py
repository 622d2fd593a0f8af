"""The multilevel (level-equation) form, contextual variables, and the classic methods side by side.

`hlm()` takes a model as the seeds write it, in Bryk & Raudenbush's notation:

    Level 1:  Y_ij  = β_0j + β_1j X_ij + r_ij
    Level 2:  β_0j  = γ_00 + γ_01 W_j + u_0j
              β_1j  = γ_10 + γ_11 W_j + u_1j

substitutes the level-2 equations into level 1 (Monette, "From the multilevel model to the
mixed model"), and fits the combined model

    Y_ij = γ_00 + γ_01 W_j + γ_10 X_ij + γ_11 X_ij W_j + u_0j + u_1j X_ij + r_ij

with `lmer("Y ~ 1 + X + W + X:W + (1 + X | group)")`. With three levels (π at level 1, β at
level 2, γ at level 3) the same substitution is made twice.

`group_mean`/`center_within` make the contextual (derived level-2) variable and the
within-group (CWG) variable; `hausman_test` compares the within- and between-group
effects; `compare_methods` puts the estimates of the seeds' classic methods in one table.
"""
from .contextual import HausmanResult, center_within, group_mean, hausman_test, within_estimator
from .equations import HlmSpec, check_level_variables, hlm_formula
from .methods import compare_methods
from .model import HlmModel, hlm

__all__ = ["hlm", "HlmModel", "HlmSpec", "hlm_formula", "check_level_variables", "group_mean", "center_within",
           "hausman_test", "HausmanResult", "within_estimator", "compare_methods"]
