"""The drill scores while its flows make their last uploads after ``run.end``, and attaches
its report to Prefect while the HTML renders.

What is scored is final at ``run.end`` (the ledger closed, the Slack thread's last update
sent, the manifest pinned); what a flow does afterwards (its ledger's copy as evidence,
Prefect's record of its end) is waited for before serve stops, not before the scoring.
Here the flows' end is an event only the scoring sets: a drill that waited for the flows
before scoring would never see it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from clampdown.app.drill.runner import DrillRunner

WAIT = 30.0  # a bound for a broken drill, never reached by a working one


class Runs:
    """The follower as the runner sees it once every run ended: its flows still finishing."""

    def __init__(self, scored: threading.Event, log: list[str]) -> None:
        self._scored = scored
        self._log = log
        self.overlapped: bool | None = None

    def wait_for_run_threads(self) -> None:
        self.overlapped = self._scored.wait(WAIT)
        self._log.append("flows done")

    def all_ended(self) -> bool:
        return True


def test_scoring_overlaps_the_flows_last_uploads_and_serve_stops_after_them() -> None:
    log: list[str] = []
    scored = threading.Event()
    runs = Runs(scored, log)

    def report() -> str:
        log.append("scored")
        scored.set()
        return "the report"

    after = SimpleNamespace(report=report)
    session = SimpleNamespace(stop_serving=lambda: log.append("serve stops"))
    runner = DrillRunner.__new__(DrillRunner)
    got = runner._score(session, after, runs)  # type: ignore[arg-type]
    assert got == "the report"
    assert runs.overlapped is True  # the scoring ran while the flows were finishing
    assert log == ["scored", "flows done", "serve stops"]


def test_serve_is_left_running_while_a_run_has_not_ended() -> None:
    log: list[str] = []
    scored = threading.Event()
    runs = Runs(scored, log)
    runs.all_ended = lambda: False  # type: ignore[method-assign]

    def report() -> str:
        scored.set()
        return "the report"

    runner = DrillRunner.__new__(DrillRunner)
    session = SimpleNamespace(stop_serving=lambda: log.append("serve stops"))
    runner._score(session, SimpleNamespace(report=report), runs)  # type: ignore[arg-type]
    assert "serve stops" not in log


def test_the_report_is_attached_while_its_html_renders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The artifact's request waits on the Prefect API; the HTML renders meanwhile. A failed
    attach is a note of the returned report, never of the files (as before)."""
    from clampdown.app.drill import report as report_module

    rendering = threading.Event()

    def html(report: object) -> str:
        rendering.set()
        return "<html>"

    overlapped: list[bool] = []

    def attach(self: object, markdown: str, report: object) -> str:
        overlapped.append(rendering.wait(WAIT))
        return "the report could not be attached to the Prefect run: API down"

    monkeypatch.setattr(report_module, "to_markdown", lambda report: "# report")
    monkeypatch.setattr(report_module, "to_html", html)
    monkeypatch.setattr(report_module.AfterAction, "_attach", attach)
    after = report_module.AfterAction.__new__(report_module.AfterAction)
    after._session = SimpleNamespace(workspace=tmp_path / "ws")  # type: ignore[assignment]
    report = SimpleNamespace(run_id="a1b2c3d4e5f6", notes=[])
    result = after.write(report, tmp_path / "out")  # type: ignore[arg-type]
    assert overlapped == [True]
    assert result.html.read_text() == "<html>"
    assert report.notes == ["the report could not be attached to the Prefect run: API down"]
