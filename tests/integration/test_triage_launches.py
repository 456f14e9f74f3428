"""Serve's recorded runs are launched in the order their alerts were answered, a few at a time
in Prefect's set-up (flows/clampdown_flows/triage.py ``Launcher``); a run waiting to be
launched is held, so the stopped-run scan does not take it for an orphan (issue 15)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from clampdown.core.home import Home
from clampdown.core.run_ownership import is_held
from clampdown_flows.triage import Launcher


@dataclass
class Recorded:
    """A PreparedStart whose launch is only noted."""

    run_id: str
    launched: list[str] = field(default_factory=list)
    on_start: Callable[[], None] | None = None

    def record(self) -> None:
        pass

    def launch(self, on_start: Callable[[], None] | None = None) -> None:
        self.on_start = on_start
        self.launched.append(self.run_id)

    def discard(self) -> None:
        pass


def until(check: Callable[[], bool], what: str) -> None:
    """Wait for ``check`` (bounded only to fail instead of hanging; nothing is timed)."""
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def started(home: Home, run_id: str) -> None:
    """What the run's flow does once Prefect's set-up is done: its first ledger record."""
    files = home.run(run_id)
    files.dir.mkdir(parents=True, exist_ok=True)
    files.ledger.write_text('{"type":"run.start"}\n', encoding="utf-8")


def launcher_of(tmp_path: Path, at_once: int, cap: float = 60.0) -> tuple[Home, Launcher]:
    home = Home(tmp_path / "home")
    return home, Launcher(home, lambda run_id: home.run(run_id).ledger, at_once, cap)


def test_runs_launch_in_order_a_few_at_a_time(tmp_path: Path) -> None:
    home, launcher = launcher_of(tmp_path, at_once=2)
    launched: list[str] = []
    runs = [Recorded(f"run-{n}", launched) for n in range(5)]
    for run in runs:
        launcher.launch(run)  # returns at once: the alert's answer never waits for a launch
    assert launched == ["run-0", "run-1"]
    assert [is_held(home.run(r.run_id)) for r in runs] == [False, False, True, True, True]
    started(home, "run-1")
    until(lambda: launched == ["run-0", "run-1", "run-2"], "run-2 launched once run-1 started")
    assert not is_held(home.run("run-2"))  # released for the run's own process to take
    time.sleep(0.1)
    assert launched == ["run-0", "run-1", "run-2"]  # two in set-up: run-0 and run-2
    started(home, "run-0")
    started(home, "run-2")
    until(lambda: len(launched) == 5, "the rest launched")
    assert launched == [f"run-{n}" for n in range(5)]
    launcher.close()


def test_a_run_that_never_starts_leaves_the_set_up_after_the_cap(tmp_path: Path) -> None:
    _home, launcher = launcher_of(tmp_path, at_once=1, cap=0.2)
    launched: list[str] = []
    launcher.launch(Recorded("stuck", launched))
    launcher.launch(Recorded("next", launched))
    until(lambda: launched == ["stuck", "next"], "the next run launched after the cap")
    launcher.close()


def test_close_leaves_waiting_runs_to_the_next_serve(tmp_path: Path) -> None:
    home, launcher = launcher_of(tmp_path, at_once=1)
    launched: list[str] = []
    launcher.launch(Recorded("first", launched))
    launcher.launch(Recorded("waiting", launched))
    assert is_held(home.run("waiting"))
    launcher.close()
    assert not is_held(home.run("waiting"))  # its start record is what the next serve finds
    started(home, "first")
    time.sleep(0.1)
    assert launched == ["first"]


def test_launches_from_many_threads_keep_the_order_they_were_queued_in(tmp_path: Path) -> None:
    home, launcher = launcher_of(tmp_path, at_once=1)
    launched: list[str] = []
    launcher.launch(Recorded("head", launched))
    queued: list[str] = []
    lock = threading.Lock()

    def answer(n: int) -> None:
        with lock:  # the order the triage threads hand their runs over in
            queued.append(f"run-{n}")
            launcher.launch(Recorded(f"run-{n}", launched))

    threads = [threading.Thread(target=answer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    def start_each() -> bool:
        for run_id in list(launched):
            if not home.run(run_id).ledger.exists():
                started(home, run_id)
        return len(launched) == 9

    until(start_each, "every run launched")
    assert launched == ["head", *queued]
    launcher.close()


def test_a_run_that_says_it_started_lets_the_next_go_without_its_ledger(tmp_path: Path) -> None:
    """The starter tells the launcher when a run wrote ``run.start`` (``on_start``): the next
    run goes then, even where no ledger can be looked at (and long before the cap)."""
    home = Home(tmp_path / "home")
    launcher = Launcher(home, lambda run_id: None, at_once=1, cap=600)
    launched: list[str] = []
    first, second = Recorded("first", launched), Recorded("second", launched)
    launcher.launch(first)
    launcher.launch(second)
    time.sleep(0.2)
    assert launched == ["first"]  # in set-up: nothing says it started
    assert first.on_start is not None
    first.on_start()
    until(lambda: launched == ["first", "second"], "the next run launched once told")
    launcher.close()
