"""bench/docling_ray.py: its figures (ratios per repetition, the goal's verdict, the markdown check) and
one real measurement in a fresh process (one document, serial)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_docling_ray", ROOT / "bench" / "docling_ray.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def run(mode: str, rep: int, wall: float, docs: int = 10, **extra) -> dict:
    return {"mode": mode, "rep": rep, "docs": docs, "wall": wall, "process": wall + 4, "first": wall / 2, "ready": wall / 4,
            "disturbed": False, "stats": None} | extra


def test_ratio_is_the_median_of_per_repetition_ratios_not_a_ratio_of_medians():
    # Repetition 1 was slow for both (a disturbed machine): paired, auto is 2x serial every time.
    runs = [run("serial", 0, 10), run("auto", 0, 5), run("serial", 1, 40), run("auto", 1, 20),
            run("serial", 2, 12), run("auto", 2, 6)]
    summary = bench.summarise(runs, ["serial", "auto"])
    assert summary["auto"]["ratio"] == pytest.approx(2.0)
    assert summary["serial"]["ratio"] == pytest.approx(1.0)
    assert summary["auto"]["wall"] == 6 and summary["auto"]["docs_per_s"] == pytest.approx(10 / 6)
    assert summary["auto"]["share"] == pytest.approx(0.5) and summary["auto"]["ready_share"] == pytest.approx(0.25)


def test_ray_figures_come_from_stats_when_given():
    stats = {"decision": "auto: ray (x)", "ray_up_s": 3.0, "actors_ready_s": [7.0, 9.0], "local_docs": 40, "ray_docs": 60}
    summary = bench.summarise([run("serial", 0, 10), run("auto", 0, 5, stats=stats, ray_started_at=1.5)], ["serial", "auto"])
    auto = summary["auto"]
    assert (auto["ray_up"], auto["actors_ready"], auto["ray_started_at"], auto["local_docs"], auto["ray_docs"]) == (3.0, 9.0, 1.5, 40, 60)
    assert auto["decision"] == "auto: ray (x)" and summary["serial"]["decision"] is None


def verdict(ratios: dict[int, float]) -> str:
    return bench.goal({size: {"auto": {"ratio": r}} for size, r in ratios.items()})[0]


def test_goal_needs_1x_everywhere_and_1_6x_at_1000():
    assert verdict({1: 1.0, 10: 1.02, 100: 1.3, 1000: 1.7}) == "PASS"
    assert verdict({1: 0.97, 10: 1.02, 100: 1.3, 1000: 1.7}) == "FAIL"
    assert verdict({1: 1.0, 10: 1.02, 100: 1.3, 1000: 1.5}) == "FAIL"
    assert verdict({1: 1.0, 10: 1.02}) == "NOT CHECKED"
    assert verdict({1: 0.9, 10: 1.02}) == "FAIL"
    assert bench.goal({10: {"serial": {"ratio": 1.0}}})[0] == "NOT CHECKED"


def test_a_different_markdown_length_stops_the_benchmark():
    reference: dict[str, int] = {}
    bench.check_chars({"mode": "serial", "docs": 2, "chars": {"a": 10, "b": 20}}, reference)
    bench.check_chars({"mode": "ray2", "docs": 3, "chars": {"a": 10, "b": 20, "c": 5}}, reference)
    with pytest.raises(SystemExit, match="b has 21 characters in auto"):
        bench.check_chars({"mode": "auto", "docs": 2, "chars": {"a": 10, "b": 21}}, reference)


def test_modes():
    assert [bench.workers_of(m) for m in ("serial", "auto", "ray2", "ray8")] == [0, "auto", 2, 8]
    for bad in ("ray", "ray0", "parallel"):
        with pytest.raises(ValueError, match="unknown mode"):
            bench.workers_of(bad)


def test_one_document_serial_end_to_end(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "docling_ray.py"), "--sizes", "1", "--runs", "1",
                          "--modes", "serial", "--size", "2", "--corpus", str(tmp_path / "corpus")],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 docs  rep 1  serial" in out.stdout
    assert "goal (auto >= 1.0x serial at every size, >= 1.6x at 1000): NOT CHECKED" in out.stdout
    assert (tmp_path / "corpus" / "doc-0000.html").exists() and (tmp_path / "corpus" / ".bench-size").read_text() == "2"
    # The corpus is kept, and a corpus of another size is refused rather than mixed.
    again = subprocess.run([sys.executable, str(ROOT / "bench" / "docling_ray.py"), "--sizes", "1", "--modes", "serial",
                            "--corpus", str(tmp_path / "corpus")], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert again.returncode != 0 and "holds a corpus of --size 2, not 20" in again.stderr
