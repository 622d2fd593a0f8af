"""Datasets shipped with hlm_jax (from lme4, mlmRev and the seed lecture notes)."""
from __future__ import annotations

from importlib import resources

import pandas as pd

_DESCRIPTIONS = {
    "sleepstudy": "Reaction times (ms) of 18 subjects over 10 days of sleep deprivation (lme4).",
    "dyestuff": "Yield of dyestuff from 6 batches, 5 preparations each (lme4).",
    "dyestuff2": "Simulated dyestuff data whose between-batch variance estimate is zero (lme4).",
    "hsb": "High School and Beyond: 7,185 students in 160 schools (mlmRev Hsb82, mAch renamed mathach).",
    "penicillin": "Penicillin potency: 24 plates crossed with 6 samples (lme4).",
    "pastes": "Paste strength: casks nested in batches (lme4).",
    "insteval": ("Lecture evaluations at ETH Zurich: 73,421 ratings, students crossed with lecturers (lme4); "
                 "s, d, studage, lectage, service and dept are Categoricals in R's level order."),
    "cbpp": "Contagious bovine pleuropneumonia incidence per herd and period (lme4).",
    "verbagg": ("Verbal aggression item responses: 316 persons x 24 items, r2 = 1 for a 'yes' or 'perhaps' "
                "(lme4 VerbAgg; 7,584 rows)."),
    "orthodont": "Orthodontic distance growth of 27 children (nlme).",
    "exam": ("London schools exam scores: 4,059 students in 65 schools; normexam (normalised GCSE score), "
             "standLRT (standardised London Reading Test at intake), schavg, schgend, vr, intake, sex, type "
             "(mlmRev Exam; factors stored as labels, so their reference levels sort alphabetically)."),
}


# R's factors, as pandas Categoricals with R's level order (None: the sorted values, as R's factor()).
# The first category is the reference level of treatment contrasts, so fixed effects are named as in R
# (InstEval's dept levels are stored in the order 15, 5, 10, ...: R's tables start with dept5).
_FACTORS = {
    "insteval": {"s": None, "d": None, "studage": None, "lectage": None, "service": None,
                 "dept": [15, 5, 10, 12, 6, 7, 4, 8, 9, 14, 1, 3, 11, 2]},
}


def names() -> list[str]:
    """The names `load` accepts."""
    return sorted(_DESCRIPTIONS)


def describe(name: str) -> str:
    """One line saying what the dataset is and where it comes from."""
    return _DESCRIPTIONS[_check(name)]


def load(name: str) -> pd.DataFrame:
    """A fresh DataFrame of the embedded dataset `name` (e.g. "sleepstudy")."""
    path = resources.files(__name__) / "data" / f"{_check(name)}.csv.gz"
    with resources.as_file(path) as p:
        frame = pd.read_csv(p)
    for column, levels in _FACTORS.get(_check(name), {}).items():
        order = sorted(frame[column].unique()) if levels is None else levels
        frame[column] = pd.Categorical(frame[column], categories=order)
    return frame


def _check(name: str) -> str:
    key = name.lower()
    if key not in _DESCRIPTIONS:
        raise KeyError(f"unknown dataset {name!r}; available: {', '.join(names())}")
    return key
