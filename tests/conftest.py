"""Shared fixtures: lme4 reference fits copied from ../shared/reference into tests/reference."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import hlm_jax as hj

REFERENCE = Path(__file__).parent / "reference"


def load_reference(case: str) -> dict:
    return json.loads((REFERENCE / f"{case}.json").read_text())


@pytest.fixture
def reference():
    return load_reference


@pytest.fixture(scope="session")
def sleepstudy():
    """lme4's sleepstudy data."""
    return hj.datasets.load("sleepstudy")
