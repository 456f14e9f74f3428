"""A run's boto3 clients are made once and reused by its steps, never by another run.

No AWS is reached: clients are made (that opens no connection) and compared; the one call
made is refused by a read-only client before anything is sent.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from clampdown.core.actions import ActionContext
from clampdown.core.home import Home
from clampdown_aws import base
from clampdown_aws.base import Aws, AwsAction, MutatingCallRefused
from clampdown_aws.clients import RunClients

ROLE = "arn:aws:iam::210987654321:role/clampdown-responder"


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> RunClients:
    """Fake credentials, and this test's own client cache and assumed-role credentials."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    clients = RunClients()
    monkeypatch.setattr(base, "CLIENTS", clients)
    monkeypatch.setattr(base, "_assumed", {})
    return clients


def ctx(home: Path, run_id: str = "run-a", step_id: str = "one", **kw: Any) -> ActionContext:
    return ActionContext(
        run_id=run_id, step_id=step_id, runbook="t", home=Home(home), region="us-east-1", **kw
    )


def assumed(run_id: str, key_id: str, expires_in: float) -> None:
    """As if ``sts:AssumeRole`` had given run ``run_id`` these credentials for ROLE."""
    keys = {
        "aws_access_key_id": key_id,
        "aws_secret_access_key": "secret",
        "aws_session_token": "token",
    }
    base._assumed[(ROLE, run_id)] = (keys, time.time() + expires_in)


def access_key(client: Any) -> str:
    return str(client._request_signer._credentials.access_key)


def test_a_runs_second_step_gets_the_same_client(tmp_path: Path) -> None:
    first = Aws(ctx(tmp_path, step_id="one")).client("iam")
    again = Aws(ctx(tmp_path, step_id="one")).client("iam")
    second_step = Aws(ctx(tmp_path, step_id="two")).client("iam")
    assert again is first and second_step is first
    assert Aws(ctx(tmp_path)).client("s3") is not first  # another service, another client


def test_two_runs_never_share_a_client(tmp_path: Path) -> None:
    a = Aws(ctx(tmp_path, run_id="run-a")).client("iam")
    b = Aws(ctx(tmp_path, run_id="run-b")).client("iam")
    assert a is not b
    # the same run id in another home is another run
    elsewhere = Aws(ctx(tmp_path / "other-home", run_id="run-a")).client("iam")
    assert elsewhere is not a


def test_two_runs_with_one_role_never_share_its_credentials(tmp_path: Path) -> None:
    assumed("run-a", "ASIAFORRUNA", 3600)
    assumed("run-b", "ASIAFORRUNB", 3600)
    a = Aws(ctx(tmp_path, run_id="run-a", account=ROLE)).client("iam")
    b = Aws(ctx(tmp_path, run_id="run-b", account=ROLE)).client("iam")
    assert (access_key(a), access_key(b)) == ("ASIAFORRUNA", "ASIAFORRUNB")
    # and the engine's own credentials are another client again
    assert access_key(Aws(ctx(tmp_path, run_id="run-a")).client("iam")) == "testing"


def test_a_read_only_client_is_never_handed_to_a_mutating_caller(tmp_path: Path) -> None:
    preview = Aws(ctx(tmp_path), read_only=True).client("iam")
    changing = Aws(ctx(tmp_path)).client("iam")
    assert changing is not preview
    assert Aws(ctx(tmp_path), read_only=True).client("iam") is preview  # reused as read-only
    with pytest.raises(MutatingCallRefused, match="iam:DeleteUser"):
        preview.delete_user(UserName="x")


def test_a_mutating_client_is_never_handed_to_a_preview(tmp_path: Path) -> None:
    changing = Aws(ctx(tmp_path)).client("iam")
    preview = Aws(ctx(tmp_path), read_only=True).client("iam")
    assert preview is not changing
    with pytest.raises(MutatingCallRefused):
        preview.delete_user(UserName="x")


def test_renewed_role_credentials_give_new_clients(tmp_path: Path) -> None:
    assumed("run-a", "ASIAFIRST", 3600)
    step = ctx(tmp_path, account=ROLE)
    first = Aws(step).client("iam")
    assert Aws(step).client("iam") is first
    assumed("run-a", "ASIARENEWED", 3600)  # what _role_credentials does 5 min before expiry
    renewed = Aws(step).client("iam")
    assert renewed is not first and access_key(renewed) == "ASIARENEWED"
    assert Aws(step).client("iam") is renewed


def test_credentials_close_to_expiry_are_renewed_before_a_client_is_handed_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assumed("run-a", "ASIAFIRST", 3600)
    step = ctx(tmp_path, account=ROLE)
    first = Aws(step).client("iam")
    assumed("run-a", "ASIAFIRST", 200)  # the same set, now within the 300 s margin
    asked: list[str] = []

    class Sts:
        def assume_role(self, **kw: Any) -> dict[str, Any]:
            from datetime import UTC, datetime, timedelta

            asked.append(kw["RoleSessionName"])
            return {
                "Credentials": {
                    "AccessKeyId": "ASIANEXT",
                    "SecretAccessKey": "s",
                    "SessionToken": "t",
                    "Expiration": datetime.now(UTC) + timedelta(hours=1),
                }
            }

    monkeypatch.setattr("boto3.client", lambda *a, **k: Sts())
    renewed = Aws(step).client("iam")
    assert asked == ["clampdown-run-a"]
    assert renewed is not first and access_key(renewed) == "ASIANEXT"


def test_changed_aws_variables_give_new_clients(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = Aws(ctx(tmp_path)).client("iam")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    moved = Aws(ctx(tmp_path)).client("iam")
    assert moved is not first and moved.meta.endpoint_url == "http://127.0.0.1:9"
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    retried = Aws(ctx(tmp_path)).client("iam")
    assert retried is not moved and retried.meta.config.retries["total_max_attempts"] == 2


def test_a_runs_clients_are_released_when_it_ends(tmp_path: Path, fresh: RunClients) -> None:
    assumed("run-a", "ASIAFORRUNA", 3600)
    assumed("run-b", "ASIAFORRUNB", 3600)
    a = Aws(ctx(tmp_path, run_id="run-a", account=ROLE)).client("iam")
    b = Aws(ctx(tmp_path, run_id="run-b", account=ROLE)).client("iam")
    closed: list[Any] = []
    a.close = lambda: closed.append(a)  # type: ignore[method-assign]

    AwsAction.release_run("run-a")

    assert [run_id for _, run_id in fresh.runs()] == ["run-b"]
    assert closed == [a]  # its connections closed
    assert (ROLE, "run-a") not in base._assumed and (ROLE, "run-b") in base._assumed
    assert Aws(ctx(tmp_path, run_id="run-b", account=ROLE)).client("iam") is b
    assumed("run-a", "ASIAAGAIN", 3600)
    assert Aws(ctx(tmp_path, run_id="run-a", account=ROLE)).client("iam") is not a


def test_a_missed_release_keeps_at_most_max_runs() -> None:
    clients = RunClients(max_runs=2)
    made = [clients.get(("home", run), "k", None, object) for run in ("r1", "r2")]
    assert clients.get(("home", "r1"), "k", None, object) is made[0]  # r1 used last
    clients.get(("home", "r3"), "k", None, object)
    assert clients.runs() == [("home", "r1"), ("home", "r3")]  # r2, least recently used, gone
    assert clients.get(("home", "r2"), "k", None, object) is not made[1]


def test_one_run_asking_from_many_threads_makes_one_client(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda i: Aws(ctx(tmp_path, step_id=f"s{i}")).client("kms"), range(8)))
    assert len({id(c) for c in got}) == 1


def test_a_slow_assume_role_of_one_run_does_not_hold_up_another_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """STS throttled for one run (its call retried for a while) must not stop another run
    from getting its credentials: the lock is per (role, run), not the module's."""
    import boto3

    monkeypatch.setattr(base, "_assumed", {})
    monkeypatch.setattr(base, "_assuming", {})
    gate, slow_entered = threading.Event(), threading.Event()

    class FakeSts:
        def assume_role(self, RoleArn: str, RoleSessionName: str, DurationSeconds: int) -> dict:
            if RoleSessionName == "clampdown-run-slow":
                slow_entered.set()
                assert gate.wait(60), "the test never let the slow call end"
            return {
                "Credentials": {
                    "AccessKeyId": RoleSessionName,
                    "SecretAccessKey": "secret",
                    "SessionToken": "token",
                    "Expiration": datetime.now(UTC) + timedelta(hours=1),
                }
            }

    monkeypatch.setattr(boto3, "client", lambda *args, **kwargs: FakeSts())
    got: list[tuple[dict[str, str], float]] = []
    slow = threading.Thread(target=base._role_credentials, args=(ROLE, "run-slow", "us-east-1"))
    slow.start()
    try:
        assert slow_entered.wait(30)
        fast = threading.Thread(
            target=lambda: got.append(base._role_credentials(ROLE, "run-fast", "us-east-1"))
        )
        fast.start()
        fast.join(30)  # a bound for the event, not a timing: it never ends with a shared lock
        assert [keys["aws_access_key_id"] for keys, _ in got] == ["clampdown-run-fast"]
    finally:
        gate.set()
        slow.join(30)
    assert base._assumed[(ROLE, "run-slow")][0]["aws_access_key_id"] == "clampdown-run-slow"
    base.release_run("run-slow")
    assert (ROLE, "run-slow") not in base._assumed and (ROLE, "run-slow") not in base._assuming
