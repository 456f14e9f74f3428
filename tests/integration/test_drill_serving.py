"""A drill begins serve's stop as soon as every run has ended, and scores meanwhile.

``Serving.begin_stop`` asks the loopback server to stop without waiting: its shutdown
(the app's lifespan end) runs in its own thread while the drill writes its report, and the
block's end waits for it. The drill does so only when every run it followed has ended
(``RunFollower.all_ended``): a run still going is never cut short for speed.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from clampdown.app.drill.follower import RunFollower
from clampdown.app.drill.runs import TrackedRun
from clampdown.app.drill.world import serve_on_loopback


def _app(shut: threading.Event) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        shut.set()

    app = FastAPI(lifespan=lifespan)

    @app.get("/ping")
    def ping() -> dict[str, bool]:
        return {"ok": True}

    return app


def test_begin_stop_shuts_serve_down_while_the_block_goes_on() -> None:
    shut = threading.Event()
    with serve_on_loopback(_app(shut)) as serving:
        assert httpx.get(f"{serving.url}/ping", timeout=10).json() == {"ok": True}
        assert not shut.is_set()
        serving.begin_stop()
        assert shut.wait(15), "serve's shutdown did not run after begin_stop"
    assert shut.is_set()


def test_the_block_end_still_stops_serve_without_begin_stop() -> None:
    shut = threading.Event()
    with serve_on_loopback(_app(shut)) as serving:
        httpx.get(f"{serving.url}/ping", timeout=10)
    assert shut.is_set()


def _run(run_id: str, *, ended: bool) -> TrackedRun:
    run = TrackedRun(run_id, "contain-model-theft", "the alert", Path("ledger.jsonl"), 0.0)
    run.records = [{"type": "run.start"}] + ([{"type": "run.end"}] if ended else [])
    return run


def test_all_ended_only_when_every_followed_run_has_ended() -> None:
    follower: Any = RunFollower(None, None, ballots=None, commands=None, injects=None)  # type: ignore[arg-type]
    assert not follower.all_ended()  # no run found: nothing to say it ended
    follower._tracked = {"r1": _run("r1", ended=True), "r2": _run("r2", ended=False)}
    assert not follower.all_ended()
    follower._tracked["r2"] = _run("r2", ended=True)
    assert follower.all_ended()
