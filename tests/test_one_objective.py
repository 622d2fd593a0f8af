"""One Gaussian criterion for any number of grouping factors (issue 13).

The blocked Cholesky of `likelihood.crossed` covers every model, one grouping factor being the case
without a dense part; `likelihood.lmm` (one factor) and `likelihood.sums` (the sufficient-statistic
fast path of the batches) must give the same profiled criterion to 1e-10 on every reference model,
and all of them must equal a dense textbook evaluation (Bates et al. 2015, eq. 34 and 41) that
forms Z, Λ and the full Cholesky factor of ΛᵀZᵀZΛ + I with numpy.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import hlm_jax as hj
from conftest import load_reference
from hlm_jax.design import build_design
from hlm_jax.fit import crossed_stats, design_stats
from hlm_jax.likelihood import crossed, lmm, sums
from hlm_jax.model.layout import theta_layout

MODELS = [  # (formula, data set, REML) of the reference fits in tests/reference
    ("Yield ~ 1 + (1 | Batch)", "dyestuff", True),
    ("Yield ~ 1 + (1 | Batch)", "dyestuff", False),
    ("Yield ~ 1 + (1 | Batch)", "dyestuff2", True),
    ("mathach ~ 1 + (1 | school)", "hsb", True),
    ("mathach ~ ses * sector + (ses | school)", "hsb", True),
    ("mathach ~ cses + meanses + sector + cses:sector + (cses | school)", "hsb", True),
    ("Reaction ~ Days + (1 | Subject)", "sleepstudy", True),
    ("Reaction ~ Days + (Days | Subject)", "sleepstudy", True),
    ("Reaction ~ Days + (Days | Subject)", "sleepstudy", False),
    ("Reaction ~ Days + (Days || Subject)", "sleepstudy", True),
    ("strength ~ 1 + (1 | batch/cask)", "pastes", True),
    ("diameter ~ 1 + (1 | plate) + (1 | sample)", "penicillin", True),
    ("score ~ Machine + cs(0 + Machine | Worker)", "machines", True),
]


def _data(name: str) -> pd.DataFrame:
    if name == "machines":
        return pd.DataFrame(load_reference("machines_compsymm_nlme")["data"])
    data = hj.datasets.load(name)
    return data.assign(cses=data["ses"] - data.groupby("school")["ses"].transform("mean"),
                       meanses=data.groupby("school")["ses"].transform("mean")) if name == "hsb" else data


def dense_criterion(design, theta: np.ndarray, reml: bool) -> float:
    """The profiled criterion from dense Z and Λ: L Lᵀ = ΛᵀZᵀZΛ + I, R_ZX, R_X, c_u, c_β and r²."""
    info = design.info
    lams = theta_layout(info.terms).lambda_blocks(np.asarray(theta, float))
    Zs, Ls = [], []
    for f, lam in zip(info.factors, lams):
        Zk = np.zeros((info.nobs, f.n_levels * f.q))
        for j in range(f.q):
            Zk[np.arange(info.nobs), f.codes * f.q + j] = f.Z[:, j]
        Zs.append(Zk)
        Ls.append(np.kron(np.eye(f.n_levels), lam))
    Z, Lam = np.hstack(Zs), _block_diag(Ls)
    X, n, p = info.X, info.nobs, info.p
    y = info.y - X @ np.linalg.lstsq(X, info.y, rcond=None)[0]
    L = np.linalg.cholesky(Lam.T @ Z.T @ Z @ Lam + np.eye(Z.shape[1]))
    RZX = np.linalg.solve(L, Lam.T @ Z.T @ X)
    cu = np.linalg.solve(L, Lam.T @ Z.T @ y)
    RX = np.linalg.cholesky(X.T @ X - RZX.T @ RZX)
    cb = np.linalg.solve(RX, X.T @ y - RZX.T @ cu)
    r2 = y @ y - cu @ cu - cb @ cb
    dof = n - reml * p
    return (2 * np.sum(np.log(np.diag(L))) + reml * 2 * np.sum(np.log(np.diag(RX)))
            + dof * (1 + np.log(2 * np.pi * r2 / dof)))


def _block_diag(blocks):
    out = np.zeros((sum(b.shape[0] for b in blocks),) * 2)
    at = 0
    for b in blocks:
        out[at:at + b.shape[0], at:at + b.shape[0]] = b
        at += b.shape[0]
    return out


@pytest.mark.parametrize("formula, data, reml", MODELS)
def test_every_path_gives_the_same_criterion(formula, data, reml):
    design = build_design(formula, _data(data))
    layout = theta_layout(design.info.terms)
    rng = np.random.default_rng(5)
    points = [layout.start(), np.where(np.isfinite(layout.lower), 0.1 + rng.uniform(size=layout.size),
                                       rng.normal(scale=0.3, size=layout.size))]
    with jax.enable_x64(True):
        general, _ = crossed_stats(design)
        one = design_stats(design)[0] if len(design.info.factors) == 1 else None
        r = jnp.asarray(float(reml))
        for theta in points:
            expected = dense_criterion(design, theta, reml)
            th = jnp.asarray(theta)
            values = {"blocked Cholesky": crossed.objective(th, general, r)}
            if one is not None:
                values["one factor"] = lmm.objective(th, one, r)
                if sums.applies(one):
                    values["sufficient statistics"] = sums.objective(th, one, r)
            for path, value in values.items():
                np.testing.assert_allclose(float(value), expected, rtol=1e-10, err_msg=path)
