"""The migration list: ordered, contiguous, and in step with the enums its CHECKs freeze."""

import re

import pytest

from store.migrations import MIGRATIONS
from store.types import CONFIRMED_STATUSES, CommandKind, CommandState

pytestmark = pytest.mark.unit


def test_versions_run_from_one_without_gaps_and_names_are_unique() -> None:
    assert [version for version, _, _ in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert len({name for _, name, _ in MIGRATIONS}) == len(MIGRATIONS)


def _check_values(column: str) -> set[str]:
    """Return the values of the last ``CHECK (column IN (...))`` across the migrations."""
    found = re.findall(
        rf"\b{column}\b[^,]*?CHECK \({column} IN \(([^)]*)\)\)",
        "\n".join(sql for _, _, sql in MIGRATIONS),
    )
    assert found, column
    return set(re.findall(r"'([^']*)'", found[-1]))


@pytest.mark.parametrize(
    ("column", "values"),
    [
        ("status", {status.value for status in CONFIRMED_STATUSES}),
        ("kind", {kind.value for kind in CommandKind}),
        ("state", {state.value for state in CommandState}),
    ],
)
def test_schema_checks_allow_exactly_the_enum_values(column: str, values: set[str]) -> None:
    assert _check_values(column) == values
