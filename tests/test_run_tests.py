"""`make test`'s phase runner (tools/run_tests.py): phases timed and tabulated, a failing
phase stops its chain and fails the run, a run over its budget fails with the table, and
pytest's closing line is printed last."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def runner(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("run_tests", ROOT / "tools" / "run_tests.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "run_tests", mod)  # dataclasses look their module up
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "BUILD", tmp_path)
    monkeypatch.setattr(mod, "TIMES_FILE", tmp_path / "pytest-times.json")
    return mod


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_failing_phase_stops_its_chain_and_fails_the_run(runner, capsys):
    run, results = runner.Run(), []
    chain = [runner.Phase("first", py("print('hello')")), runner.Phase("broken", py("raise SystemExit(7)")), runner.Phase("never", py("print('no')"))]
    runner.run_chain(run, chain, deadline=60, results=results)
    assert results == [7] and [p.name for p in run.phases] == ["first", "broken"]
    assert runner.finish(run, results, budget=None) == 7
    out = capsys.readouterr().out
    assert "[first] hello" in out and "| broken |" in out and "exit 7" in out and "FAILED: 1 phase chain(s) failed" in out
    assert (runner.BUILD / "test-phases.md").read_text().count("| first |") == 1


def test_a_run_over_its_budget_fails_with_the_table_and_pytest_closes(runner, capsys):
    run, results = runner.Run(), []
    summary = "3 passed, 1 skipped in 0.50s"
    runner.run_chain(run, [runner.Phase("pytest", py(f"print('..'); print({summary!r})"), prefix=False)], deadline=60, results=results)
    run.began -= 100  # the run "took" 100 s more
    assert runner.finish(run, results, budget=50) == 3
    out = capsys.readouterr().out
    assert "over its budget of 50 s" in out and "| pytest |" in out
    assert out.rstrip().splitlines()[-1] == summary  # CI reads the closing line
    assert runner.finish(run, results, budget=10_000) == 0


def test_a_phase_past_the_deadline_is_killed(runner):
    run, results = runner.Run(), []
    t0 = time.monotonic()
    runner.run_chain(run, [runner.Phase("hangs", py("import time; time.sleep(60)"))], deadline=1, results=results)
    assert results and results[0] != 0 and time.monotonic() - t0 < 30
