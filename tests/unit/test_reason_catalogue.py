"""The catalogue of condition reasons is the README's reason table, and the code's reasons."""

from __future__ import annotations

import re
from types import ModuleType

import pytest

from lamina.domain import (
    api_failures,
    build_outcome,
    commit_outcome,
    commit_preflight,
    image_status,
    layers,
    pod_problems,
)
from lamina.domain.conditions import CONDITION_TYPES, REASONS
from tests.conftest import REPO

REASON_MODULES = (
    api_failures,
    build_outcome,
    commit_outcome,
    commit_preflight,
    image_status,
    layers,
    pod_problems,
)


def readme_reason_rows() -> dict[str, str]:
    """Reason -> its row's condition cell, from every row of the README's reason table."""
    text = (REPO / "README.md").read_text()
    header = text.index("| Reason | Condition | Meaning | What to do |")
    rows: dict[str, str] = {}
    for line in text[header:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        for reason in re.findall(r"`([A-Za-z]+)`", cells[0]):
            rows[reason] = cells[1]
    return rows


def test_the_readme_table_lists_exactly_the_catalogued_reasons() -> None:
    rows = readme_reason_rows()
    assert sorted(set(REASONS) - set(rows)) == [], "catalogued but not in the README table"
    assert sorted(set(rows) - set(REASONS)) == [], "in the README table but not catalogued"


@pytest.mark.parametrize("reason", sorted(REASONS))
def test_each_readme_row_names_the_catalogued_condition(reason: str) -> None:
    assert REASONS[reason] in readme_reason_rows()[reason]


def _reason_constants(module: ModuleType) -> dict[str, str]:
    return {
        name: value
        for name, value in vars(module).items()
        if name.isupper() and isinstance(value, str) and re.fullmatch(r"[A-Z][A-Za-z]+", value)
    }


@pytest.mark.parametrize("module", REASON_MODULES, ids=lambda m: m.__name__)
def test_every_reason_the_domain_writes_is_catalogued(module: ModuleType) -> None:
    unknown = {
        name: value
        for name, value in _reason_constants(module).items()
        if value not in REASONS and value not in CONDITION_TYPES
    }
    assert unknown == {}


def test_catalogued_conditions_are_condition_types() -> None:
    assert set(REASONS.values()) <= CONDITION_TYPES
    assert set(pod_problems.POD_PROBLEM_REASONS) <= set(REASONS)
