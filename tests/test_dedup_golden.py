"""curate dedup decides as the frozen reference does (tests/dedup_golden.py): the same
kept documents and the same cluster rows, at the defaults and with --verify exact."""
import pytest

from tests.dedup_golden import CASES, decisions, golden_path, read_golden, run_case


@pytest.mark.parametrize("name", list(CASES))
def test_decisions_equal_the_golden_file(name, tmp_path):
    assert golden_path(name).exists(), "run: python -m tests.dedup_golden --write"
    run_case(name, tmp_path / "out")
    got, want = decisions(tmp_path / "out"), read_golden(name)
    assert got[:2] == want[:2]
    missing, extra = sorted(set(want) - set(got))[:5], sorted(set(got) - set(want))[:5]
    assert got == want, f"rows only in the golden file: {missing}; only in this run: {extra}"
