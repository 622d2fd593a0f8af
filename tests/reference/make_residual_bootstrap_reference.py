"""Writes orthodont_ar1_boot_responses.csv: hlm_jax's first 5 bootstrap responses (seed 1) of the
Orthodont AR(1) REML fit; make_residual_bootstrap_reference.R refits them with nlme."""
import hlm_jax as hj

d = hj.datasets.load("orthodont")
m = hj.lmer("distance ~ age * Sex + (1|Subject)", d, correlation=hj.AR1())
m.bootstrap(n=5, seed=1).responses(range(5)).to_csv("orthodont_ar1_boot_responses.csv", index=False, float_format="%.17g")
