"""What a local API waits for before it stops (:mod:`clampdown_flows.prefect_record`), and
how the resident local API proves itself (:mod:`clampdown_flows.resident_api`): no server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from uuid import uuid4

from prefect.events import Event
from prefect.events.worker import EventsWorker

from clampdown_flows.prefect_record import TaskRunWatch, watching
from clampdown_flows.resident_api import (
    PROOF_PATH,
    STATE_FILE,
    Identity,
    ProofAndIdle,
    find,
    proof,
)


def task_run_event(task_run: Any, state: str = "Completed", orchestration: str = "client") -> Event:
    return Event(
        event=f"prefect.task-run.{state}",
        resource={
            "prefect.resource.id": f"prefect.task-run.{task_run}",
            "prefect.orchestration": orchestration,
        },
        payload={"validated_state": {"type": state.upper()}},
        id=uuid4(),
    )


def test_the_watch_keeps_each_task_runs_last_reported_state() -> None:
    watch = TaskRunWatch()
    one, two = uuid4(), uuid4()
    pending, running, done = (task_run_event(one, s) for s in ("Pending", "Running", "Completed"))
    for event in (pending, running, done):
        watch.note(event)
    watch.note(task_run_event(two, "Running"))
    watch.note(Event(event="prefect.flow-run.Completed", resource={"prefect.resource.id": "x"}))
    watch.note(task_run_event(uuid4(), orchestration="server"))  # the recorder ignores these

    reported = watch.reported()
    assert set(reported) == {one, two}
    assert reported[one] == done.id  # the id the recorder stores as the task run's state_id


def test_a_full_watch_forgets_the_oldest_task_runs() -> None:
    watch = TaskRunWatch(limit=2)
    runs = [uuid4() for _ in range(3)]
    for task_run in runs:
        watch.note(task_run_event(task_run))
    assert list(watch.reported()) == runs[1:]


def test_events_sent_through_prefects_worker_reach_an_open_watch_only() -> None:
    class Worker:  # what EventsWorker._prepare_item uses of its instance
        def __init__(self) -> None:
            self._context_cache: dict[Any, Any] = {}

    inside, after = uuid4(), uuid4()
    with watching() as watch:
        assert watch is not None
        EventsWorker._prepare_item(Worker(), task_run_event(inside))  # type: ignore[arg-type]
    EventsWorker._prepare_item(Worker(), task_run_event(after))  # type: ignore[arg-type]
    assert list(watch.reported()) == [inside]


def identity(tmp_path: Path, auth: str = "clampdown:secret") -> Identity:
    return Identity(home=tmp_path, auth=auth, database="sqlite:///db", version="v1")


def test_the_proof_depends_on_every_part_it_binds() -> None:
    base = proof("clampdown:secret", "nonce", "sqlite:///db", 42, "v1")
    assert base == proof("clampdown:secret", "nonce", "sqlite:///db", 42, "v1")
    others = {
        proof("clampdown:other", "nonce", "sqlite:///db", 42, "v1"),
        proof("clampdown:secret", "nonce2", "sqlite:///db", 42, "v1"),
        proof("clampdown:secret", "nonce", "sqlite:///other", 42, "v1"),
        proof("clampdown:secret", "nonce", "sqlite:///db", 43, "v1"),
        proof("clampdown:secret", "nonce", "sqlite:///db", 42, "v2"),
    }
    assert base not in others and len(others) == 5


def test_no_state_file_or_a_broken_one_means_no_resident_api(tmp_path: Path) -> None:
    assert find(identity(tmp_path)) is None  # no file: no connection tried
    (tmp_path / STATE_FILE).write_text("{not json")
    assert find(identity(tmp_path)) is None
    (tmp_path / STATE_FILE).write_text(json.dumps({"port": "x", "pid": 1}))
    assert find(identity(tmp_path)) is None


def call(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def test_the_server_wrapper_answers_the_proof_and_passes_the_rest_through(
    tmp_path: Path,
) -> None:
    import os

    passed: list[str] = []

    async def prefect_app(scope: Any, receive: Any, send: Any) -> None:
        passed.append(scope["path"])

    wrapper = ProofAndIdle(prefect_app, identity(tmp_path), idle=0)
    sent = call(wrapper, {"type": "http", "path": PROOF_PATH, "query_string": b"nonce=abc"})
    answer = json.loads(sent[-1]["body"])
    assert answer == {"proof": proof("clampdown:secret", "abc", "sqlite:///db", os.getpid(), "v1")}
    assert passed == []

    call(wrapper, {"type": "http", "path": "/api/flow_runs/filter", "query_string": b""})
    assert passed == ["/api/flow_runs/filter"] and wrapper.active == 0


def test_a_resident_server_knows_when_its_home_no_longer_names_it(tmp_path: Path) -> None:
    import os

    wrapper = ProofAndIdle(None, identity(tmp_path), idle=0)
    assert not wrapper._recorded()  # no state file (stopped, or the home deleted)
    (tmp_path / STATE_FILE).write_text(json.dumps({"port": 1, "pid": os.getpid()}))
    assert wrapper._recorded()
    (tmp_path / STATE_FILE).write_text(json.dumps({"port": 2, "pid": os.getpid() + 1}))
    assert not wrapper._recorded()  # another server took its place


def test_a_watch_on_one_api_ignores_events_sent_to_another() -> None:
    """The test session's API must not wait for the drills' task runs, which went to the
    drills' own API and never show on the session's (a 15 s stall at every session end)."""

    class Worker:
        def __init__(self, api_url: str) -> None:
            self._context_cache: dict[Any, Any] = {}
            self.client_options = (("api_url", api_url),)

    mine, other = uuid4(), uuid4()
    with watching("http://127.0.0.1:4200/api/") as watch:
        assert watch is not None
        EventsWorker._prepare_item(Worker("http://127.0.0.1:4200/api"), task_run_event(mine))  # type: ignore[arg-type]
        EventsWorker._prepare_item(Worker("http://127.0.0.1:4300/api"), task_run_event(other))  # type: ignore[arg-type]
    assert list(watch.reported()) == [mine]
