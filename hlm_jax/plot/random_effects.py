"""Random-effect figures: the caterpillar plot of conditional modes and the BLUE → BLUP shrinkage plot."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from .layout import factor_index, panels, thin_labels

BLUE, BLUP, POPULATION = "tab:blue", "tab:red", "tab:green"


def caterpillar(model, factor: str | None = None, terms: list[str] | None = None, level: float = 0.95,
                max_labels: int = 40, ax=None):
    """lme4's dotplot(ranef(m, condVar = TRUE)): each level's conditional mode with the interval
    mode ± z·(conditional sd), one panel per random-effect column, levels sorted by the first column.

    Parameters
    ----------
    model : LmerModel
        A fitted model.
    factor : str, optional
        Grouping factor to draw (default: the first, the one with most levels).
    terms : list of str, optional
        Random-effect columns to draw (default: all of the factor's).
    level : float
        Coverage of the intervals (z is the normal quantile (1 + level) / 2).
    max_labels : int
        At most this many level names on the vertical axis (a subset, evenly spaced).
    ax : matplotlib Axes or sequence of Axes, optional
        One axes per drawn column; a new figure when omitted.

    Returns the Figure.
    """
    k = factor_index(model, factor)
    name = model.info.factors[k].name
    re = model.ranef[name]
    columns = list(terms) if terms is not None else model.z_names(k)
    unknown = [c for c in columns if c not in re.columns]
    if unknown:
        raise KeyError(f"{unknown[0]!r} is not a random-effect column of {name!r}; columns: {model.z_names(k)}")
    z = float(sps.norm.ppf(0.5 + level / 2))
    ordered = re.iloc[np.argsort(re[columns[0]].to_numpy(), kind="stable")]
    positions = np.arange(len(ordered))
    height = min(2.0 + 0.06 * len(ordered), 12.0)
    fig, axes = panels(len(columns), ncols=len(columns), axes=ax, height=height)
    for i, (a, col) in enumerate(zip(axes, columns)):
        mode, sd = ordered[col].to_numpy(), ordered[f"condsd_{col}"].to_numpy()
        a.hlines(positions, mode - z * sd, mode + z * sd, color="0.55", linewidth=1)
        a.plot(mode, positions, "o", color=BLUE, markersize=3)
        a.axvline(0.0, color="k", linestyle=":", linewidth=0.8)
        a.set_title(col, fontsize="small")
        a.set_xlabel(f"conditional mode ± {z:.2f} sd")
        a.set_ylim(-1, len(ordered))
        if i == 0:
            thin_labels(a, positions, ordered.index, max_labels)
            a.set_ylabel(name)
        else:
            a.set_yticks([])
    fig.suptitle(f"{name}: {len(ordered)} levels, {level:.0%} intervals", fontsize="medium")
    fig.tight_layout()
    return fig


def group_estimates(model, factor: str | None = None) -> pd.DataFrame:
    """Per level of `factor`: its rows `n`, and for each random-effect column the group's OLS estimate
    (`blue_*`, the least-squares line of y on the Z columns), its BLUP (`blup_*`, the same fitted to the
    model's fitted values) and the population value (`population_*`, fitted to Xβ̂). Levels whose Z
    columns are collinear (e.g. one row) get NaN estimates."""
    k = factor_index(model, factor)
    f = model.info.factors[k]
    cols = model.z_names(k)
    Z = f.Z[:, [model.z_names(k).index(c) for c in cols]]
    targets = np.column_stack([model.info.y, model.fitted().to_numpy(), model.predict(re=False).to_numpy()])
    order = np.argsort(f.codes, kind="stable")
    bounds = np.searchsorted(f.codes[order], np.arange(f.n_levels + 1))
    out = np.full((f.n_levels, 3, len(cols)), np.nan)
    for g in range(f.n_levels):
        rows = order[bounds[g]:bounds[g + 1]]
        Zg = Z[rows]
        if len(rows) >= len(cols) and np.linalg.matrix_rank(Zg) == len(cols):
            out[g] = np.linalg.lstsq(Zg, targets[rows], rcond=None)[0].T
    table = pd.DataFrame({"n": np.diff(bounds)}, index=pd.Index(f.levels, name=f.name))
    for i, kind in enumerate(("blue", "blup", "population")):
        for j, c in enumerate(cols):
            table[f"{kind}_{c}"] = out[:, i, j]
    return table


def _sizes(n: np.ndarray) -> np.ndarray:
    return 8.0 + 72.0 * n / max(float(np.max(n)), 1.0)


def _population(ax, x, values, horizontal: bool) -> None:
    """The population value: one line (or point) when all groups share it, else a mark per group."""
    if np.allclose(values, values[0], rtol=1e-9, atol=1e-12) and horizontal:
        ax.axhline(values[0], color=POPULATION, linewidth=2, label="population (fixed effects)")
    else:
        ax.plot(x, values, "_" if horizontal else "P", color=POPULATION, markersize=8,
                linestyle="none", label="population (fixed effects)")


def shrinkage(model, factor: str | None = None, kind: str | None = None, ax=None):
    """Per-group OLS estimates (BLUE, blue) against the BLUPs (red), with arrows from one to the other,
    towards the population value (green), as in Monette's "shrinking from the BLUE to the BLUP".

    Parameters
    ----------
    model : LmerModel
        A fitted model; the groups' OLS fits regress y on the factor's random-effect columns.
    factor : str, optional
        Grouping factor (default: the first).
    kind : {"n", "beta"}, optional
        "n": one panel per random-effect column against the group size; "beta": the first two columns
        against each other (beta space), points sized by group size. Default: "beta" with two or more
        columns, else "n".
    ax : matplotlib Axes or sequence of Axes, optional
        Where to draw ("beta": one axes; "n": one per column).

    Returns the Figure.
    """
    k = factor_index(model, factor)
    cols = model.z_names(k)
    kind = kind or ("beta" if len(cols) >= 2 else "n")
    if kind not in ("n", "beta") or (kind == "beta" and len(cols) < 2):
        raise ValueError(f"kind must be 'n' or (with two or more random-effect columns) 'beta', got {kind!r}")
    table = group_estimates(model, factor).dropna()
    n = table["n"].to_numpy(float)
    name = model.info.factors[k].name
    if kind == "n":
        fig, axes = panels(len(cols), ncols=len(cols), axes=ax, width=4.5)
        for a, c in zip(axes, cols):
            blue, blup = table[f"blue_{c}"].to_numpy(), table[f"blup_{c}"].to_numpy()
            _population(a, n, table[f"population_{c}"].to_numpy(), horizontal=True)
            a.scatter(n, blue, s=_sizes(n), color=BLUE, label="BLUE (group OLS)")
            a.scatter(n, blup, s=_sizes(n), color=BLUP, label="BLUP")
            a.quiver(n, blue, np.zeros_like(n), blup - blue, angles="xy", scale_units="xy", scale=1,
                     width=0.004, color="0.3")
            a.set_xlabel(f"rows per {name}")
            a.set_ylabel(c)
        axes[0].legend(fontsize="small")
    else:
        fig, (a,) = panels(1, axes=ax, height=4.5, width=5.5)
        x, y = cols[0], cols[1]
        bx, by = table[f"blue_{x}"].to_numpy(), table[f"blue_{y}"].to_numpy()
        px, py = table[f"blup_{x}"].to_numpy(), table[f"blup_{y}"].to_numpy()
        a.scatter(bx, by, s=_sizes(n), color=BLUE, alpha=0.7, label="BLUE (group OLS)")
        a.scatter(px, py, s=_sizes(n), color=BLUP, alpha=0.7, label="BLUP")
        a.quiver(bx, by, px - bx, py - by, angles="xy", scale_units="xy", scale=1, width=0.003, color="0.3")
        popx, popy = table[f"population_{x}"].to_numpy(), table[f"population_{y}"].to_numpy()
        _population(a, popx, popy, horizontal=False)
        a.set_xlabel(x)
        a.set_ylabel(y)
        a.legend(fontsize="small")
    fig.suptitle(f"BLUE → BLUP: {len(table)} levels of {name}", fontsize="medium")
    fig.tight_layout()
    return fig
