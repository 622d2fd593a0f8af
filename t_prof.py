import time, warnings
import numpy as np, jax, jax.numpy as jnp
import hlm_jax as hj
from hlm_jax.design import build_design
from hlm_jax.fit import design_stats, fit_stats
from hlm_jax.likelihood.lmm import objective, estimates
from hlm_jax.model.layout import theta_layout
warnings.simplefilter("ignore")
d = hj.datasets.load("insteval")
t = time.time(); des = build_design("y ~ service + d + (1 | dept)", d); print("design", time.time() - t)
with jax.enable_x64(True):
    t = time.time(); stats, b0 = design_stats(des); print("stats", time.time() - t)
    th = jnp.array([0.5]); r = jnp.asarray(1.0)
    f = jax.jit(objective); t = time.time(); f(th, stats, r).block_until_ready(); print("obj compile+run", time.time() - t)
    t = time.time(); f(th, stats, r).block_until_ready(); print("obj run", time.time() - t)
    g = jax.jit(jax.grad(objective)); t = time.time(); g(th, stats, r).block_until_ready(); print("grad c+r", time.time() - t)
    t = time.time(); g(th, stats, r).block_until_ready(); print("grad run", time.time() - t)
    h = jax.jit(jax.hessian(objective)); t = time.time(); h(th, stats, r).block_until_ready(); print("hess c+r", time.time() - t)
    t = time.time(); h(th, stats, r).block_until_ready(); print("hess run", time.time() - t)
    e = jax.jit(estimates); t = time.time(); jax.block_until_ready(e(th, stats, r)); print("est c+r", time.time() - t)
    t = time.time(); jax.block_until_ready(e(th, stats, r)); print("est run", time.time() - t)
