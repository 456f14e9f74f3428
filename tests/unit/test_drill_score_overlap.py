"""The drill attaches its report to Prefect while the HTML renders (the artifact's request
waits on the Prefect API): here the attach waits for the rendering, which a drill that
attached first would never reach.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

WAIT = 30.0  # a bound for a broken drill, never reached by a working one


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
