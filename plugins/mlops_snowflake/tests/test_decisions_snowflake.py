"""Focused tests of the Snowflake plugin's decisions (parity check, monitor SQL), written to kill the mutants
the rest of its tests let survive (docs/mutation.md)."""

import pytest

from mlops_snowflake.registry import _same_value


@pytest.mark.parametrize("a, b, same", [
    (1, 1, True), ("1", 1, True), (1, 1.0, True), ("1.0", 1, True), (0, 1, False), ("0", "1", False),
    ("yes", "yes", True), ("yes", "no", False), (None, None, True), (None, "None", True), (None, 0, False),
])
def test_parity_compares_classes_by_value_across_types(a, b, same):
    assert _same_value(a, b) is same
