"""Figures of the data and the fit: per-group lines (spaghetti / trellis) and residual diagnostics."""
from __future__ import annotations

import numpy as np
from scipy import stats as sps

from .layout import factor_index, panels

DATA, FIT, POPULATION = "0.45", "tab:red", "k"


def _column(model, name: str | None, k: int) -> tuple[str, np.ndarray]:
    """(name, values) of a numeric column of Z or X (default: the factor's first non-intercept Z column)."""
    z_names = model.z_names(k)
    if name is None:
        candidates = [c for c in z_names if c != "(Intercept)"] or [c for c in model.info.fixed_names
                                                                      if c != "(Intercept)"]
        if not candidates:
            raise ValueError("the model has no covariate to put on the x axis; pass x=")
        name = candidates[0]
    if name in z_names:
        return name, model.info.factors[k].Z[:, z_names.index(name)]
    if name in model.info.fixed_names:
        return name, model.info.X[:, list(model.info.fixed_names).index(name)]
    raise KeyError(f"{name!r} is not a column of the model matrices; choose one of "
                   f"{', '.join(dict.fromkeys(z_names + list(model.info.fixed_names)))}")


def _chosen_groups(model, k: int, max_groups: int) -> np.ndarray:
    """All level codes, or `max_groups` of them spread evenly along the first conditional mode."""
    re = model.ranef[model.info.factors[k].name]
    order = np.argsort(re.iloc[:, 0].to_numpy(), kind="stable")
    if len(order) <= max_groups:
        return order
    return order[np.unique(np.linspace(0, len(order) - 1, max_groups).round().astype(int))]


def spaghetti(model, x: str | None = None, factor: str | None = None, kind: str = "trellis",
              max_groups: int = 12, ax=None):
    """Per-group data and fitted lines against a covariate.

    Parameters
    ----------
    model : LmerModel
        A fitted model.
    x : str, optional
        Column of the model matrices on the x axis (default: the first random slope, else the first
        fixed covariate).
    factor : str, optional
        Grouping factor (default: the first).
    kind : {"trellis", "overlay"}
        "trellis": one panel per group (data points, the group's fitted line in red, the population line
        dashed), at most `max_groups` groups spread over the range of the first conditional mode;
        "overlay": every group's fitted line in one panel, with the population line in black.
    max_groups : int
        Panels of a trellis.
    ax : matplotlib Axes, optional
        For "overlay" (a trellis makes its own figure, or takes one axes per group).

    Returns the Figure.
    """
    k = factor_index(model, factor)
    f = model.info.factors[k]
    x_name, xs = _column(model, x, k)
    y, fitted, population = model.info.y, model.fitted().to_numpy(), model.predict(re=False).to_numpy()
    if kind == "overlay":
        fig, (a,) = panels(1, axes=ax, height=4.0, width=5.5)
        a.scatter(xs, y, s=4, color=DATA, alpha=0.3)
        for g in range(f.n_levels):
            rows = np.flatnonzero(f.codes == g)
            rows = rows[np.argsort(xs[rows], kind="stable")]
            a.plot(xs[rows], fitted[rows], color=FIT, alpha=0.35, linewidth=0.8)
        order = np.argsort(xs, kind="stable")
        a.plot(xs[order], population[order], color=POPULATION, linewidth=2.5, label="population")
        a.set_xlabel(x_name)
        a.set_ylabel(model.info.response)
        a.set_title(f"Fitted lines of {f.n_levels} levels of {f.name}")
        return fig
    if kind != "trellis":
        raise ValueError(f"kind must be 'trellis' or 'overlay', got {kind!r}")
    chosen = _chosen_groups(model, k, max_groups)
    fig, axes = panels(len(chosen), axes=ax, height=2.6)
    for a, g in zip(axes, chosen):
        rows = np.flatnonzero(f.codes == g)
        rows = rows[np.argsort(xs[rows], kind="stable")]
        a.scatter(xs[rows], y[rows], s=8, color=DATA)
        a.plot(xs[rows], fitted[rows], color=FIT, linewidth=1.5)
        a.plot(xs[rows], population[rows], color=POPULATION, linestyle="--", linewidth=1)
        a.set_title(f"{f.name} {f.levels[g]}", fontsize="small")
        a.set_xlabel(x_name)
        a.set_ylabel(model.info.response)
    shown = "" if len(chosen) == f.n_levels else f" ({len(chosen)} of {f.n_levels}, spread by conditional mode)"
    fig.suptitle(f"Data and fitted lines by {f.name}{shown}")
    fig.tight_layout()
    return fig


def normal_scores(n: int) -> np.ndarray:
    """Expected normal order statistics as R's qqnorm places them (ppoints: a = 3/8 for n ≤ 10, else 1/2)."""
    a = 3.0 / 8.0 if n <= 10 else 0.5
    return sps.norm.ppf((np.arange(1, n + 1) - a) / (n + 1 - 2 * a))


def _qq(ax, values: np.ndarray, title: str) -> None:
    """Normal QQ plot with R's qqline (through the quartiles)."""
    values = np.sort(values[np.isfinite(values)])
    theory = normal_scores(len(values))
    ax.plot(theory, values, "o", markersize=2.5, color="tab:blue")
    q_sample, q_theory = np.quantile(values, [0.25, 0.75]), sps.norm.ppf([0.25, 0.75])
    slope = (q_sample[1] - q_sample[0]) / (q_theory[1] - q_theory[0])
    ax.axline((q_theory[0], q_sample[0]), slope=slope, color="k", linewidth=0.8)
    ax.set_xlabel("theoretical normal quantiles")
    ax.set_ylabel("sample quantiles")
    ax.set_title(title, fontsize="small")


def diagnostics(model, axes=None):
    """Residual checks: fitted values against residuals, a normal QQ plot of the level-1 residuals and a
    normal QQ plot of each random-effect column's conditional modes (every grouping factor).

    Parameters
    ----------
    model : LmerModel
        A fitted model.
    axes : sequence of matplotlib Axes, optional
        One per panel (2 + number of random-effect columns); a new figure when omitted.

    Returns the Figure.
    """
    effects = [(f.name, c) for k, f in enumerate(model.info.factors) for c in model.z_names(k)]
    fig, flat = panels(2 + len(effects), ncols=min(3, 2 + len(effects)), axes=axes)
    fitted, resid = model.fitted().to_numpy(), model.residuals().to_numpy()
    flat[0].scatter(fitted, resid, s=4, alpha=0.5, color="tab:blue")
    flat[0].axhline(0.0, color="k", linewidth=0.8)
    flat[0].set_xlabel("fitted values")
    flat[0].set_ylabel("residuals")
    flat[0].set_title("Residuals against fitted values", fontsize="small")
    _qq(flat[1], resid, "Level-1 residuals")
    for a, (factor, col) in zip(flat[2:], effects):
        _qq(a, model.ranef[factor][col].to_numpy(), f"Random effect {col} | {factor}")
    fig.tight_layout()
    return fig
