"""Focused tests of the core's decision code, written to kill the mutants that the rest of the suite let
survive (docs/mutation.md lists the areas and the mutants left alive, with the reason for each)."""

import pytest

from hydra_plugins.mlops_optuna_sweeper.sweeper import format_value, search_space


@pytest.mark.parametrize("value, text", [
    (None, "null"), (True, "true"), (False, "false"), (0.1, "0.1"), (3, "3"), ("gbtree", "gbtree"),
    ("a b", "'a b'"), ("it's", "'it\\'s'"), ("back\\slash", "'back\\slash'"), ("end\\", "'end\\\\'"), ("\\'", "'\\\\\\''"),
    ("", "''"), ("null", "'null'"), ("1", "'1'"), ("x1", "x1"),
])
def test_sweep_values_are_written_as_hydra_reads_them_back(value, text):
    assert format_value(value) == text


@pytest.mark.parametrize("value", [None, True, False, 0.1, 1e-7, 3, "gbtree", "a b", "it's", "back\\slash", "end\\",
                                   "\\'", "", "x,y", "null", "True", "1",
                                   "-2.5", "inf", "nan", "1e3", "1_000", "[1]"])
def test_sweep_values_survive_hydras_parser(value):
    _, _, fixed = search_space({}, [f"model.params.x={format_value(value)}"])
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_override(fixed[0]).value()
    assert parsed == value and type(parsed) is type(value)
