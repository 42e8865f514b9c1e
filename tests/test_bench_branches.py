"""bench/branches.py stays runnable: a tiny run on both embedded stores, with its own checks inside
(the baseline computes every sample, the unchanged branch computes none, the merge leaves main 1% done)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_branches", ROOT / "bench" / "branches.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.mark.parametrize("kind", ["delta", "duckdb"])
def test_the_benchmark_runs_and_measures_every_phase(kind, capsys):
    medians = bench.bench(3000, 1, kind)
    assert set(medians) == {"copy", "no-op", "run", "seed", "diff", "merge"} and all(v > 0 for v in medians.values())
    out = capsys.readouterr().out
    assert "main after the merge: 2,9" in out and "up to date" in out
