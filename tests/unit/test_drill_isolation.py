"""What a drill changes in the process is undone when it ends: botocore's hook, the environment."""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import pytest
from botocore import handlers

from clampdown.app.drill.world import Secrets, drill_environment
from clampdown.core.drill_library import load_drill, resolve_drill
from clampdown_aws.testing.simulated import HOOKS, RefusedOutsideSimulation, SimulatedAws
from tests.paths import REPO

ELSEWHERE = "http://127.0.0.1:9"  # not the simulated endpoint: the hook refuses it


def _ours() -> list[tuple]:
    return [
        h
        for h in handlers.BUILTIN_HANDLERS
        if "clampdown_aws" in str(getattr(h[1], "__module__", ""))
    ]


def _call_elsewhere() -> None:
    client = boto3.session.Session(
        aws_access_key_id="AKIAUNITTEST00000000",
        aws_secret_access_key="unit",
        region_name="us-east-1",
    ).client("sts", endpoint_url=ELSEWHERE)
    client.get_caller_identity()


def test_the_botocore_hook_is_gone_after_the_drill() -> None:
    assert _ours() == []
    sim = SimulatedAws("http://127.0.0.1:1")
    with sim:
        assert sim.installed and len(_ours()) == len(HOOKS)
        with pytest.raises(RefusedOutsideSimulation):
            _call_elsewhere()
    assert not sim.installed and _ours() == []
    assert boto3.DEFAULT_SESSION is None  # it pointed at the drill's endpoint
    # a session made now goes out as it would without a drill (to the unit tests' guard)
    with pytest.raises(Exception) as caught:
        _call_elsewhere()
    assert not isinstance(caught.value, RefusedOutsideSimulation)


def test_install_twice_hooks_once_and_a_stale_uninstall_leaves_the_newer_drill() -> None:
    first, second = SimulatedAws("http://127.0.0.1:1"), SimulatedAws("http://127.0.0.1:2")
    first.install()
    second.install()
    try:
        assert len(_ours()) == len(HOOKS) and second.installed
        first.uninstall()  # not the active one: the hook stays for the second
        assert len(_ours()) == len(HOOKS) and second.installed
    finally:
        second.uninstall()
    assert _ours() == []


def test_drill_environment_sets_and_puts_back_exactly_what_it_changed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    library = REPO / "runbooks"
    drill, _ = load_drill(resolve_drill(None, library))
    monkeypatch.setenv("AWS_PROFILE", "my-real-profile")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://s3.example.com")
    monkeypatch.setenv("CLAMPDOWN_SLACK_BOT_TOKEN", "xoxb-real")
    monkeypatch.setenv("CLAMPDOWN_DRILL", "true")  # already as the drill needs it
    monkeypatch.setenv("CLAMPDOWN_SERVE_KEY", "/etc/clampdown/serve_key")  # the user's own
    monkeypatch.setenv("CLAMPDOWN_APPROVER_KEY", "~/.ssh/id_ed25519")
    monkeypatch.setenv("CLAMPDOWN_ALLOWED_SIGNERS", "/etc/clampdown/allowed_signers")
    monkeypatch.delenv("CLAMPDOWN_HOME", raising=False)
    before = dict(os.environ)
    keys = Secrets()
    signers = tmp_path.parent / "drill-signers" / "allowed_signers"
    with drill_environment(
        drill,
        tmp_path,
        keys,
        aws_endpoint="http://127.0.0.1:5000",
        slack_url=None,
        allowed_signers=signers,
    ):
        assert "AWS_PROFILE" not in os.environ and "AWS_ENDPOINT_URL_S3" not in os.environ
        assert os.environ["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5000"
        assert os.environ["CLAMPDOWN_HOME"] == str(tmp_path)
        assert os.environ["CLAMPDOWN_ALERT_TOKEN"] == keys.alert_token
        assert os.environ["CLAMPDOWN_SLACK_BOT_TOKEN"] == "xoxb-real"  # no stand-in: left alone
        # the drill's people sign with the drill's keys; the user's keys are not used
        assert os.environ["CLAMPDOWN_ALLOWED_SIGNERS"] == str(signers)
        assert "CLAMPDOWN_SERVE_KEY" not in os.environ
        assert "CLAMPDOWN_APPROVER_KEY" not in os.environ
        os.environ["CLAMPDOWN_DRILL"] = "changed meanwhile"  # the drill did not change it
    after = dict(os.environ)
    assert after.pop("CLAMPDOWN_DRILL") == "changed meanwhile"
    before.pop("CLAMPDOWN_DRILL")
    assert after == before


def test_drill_environment_points_slack_at_the_stand_in(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    drill, _ = load_drill(resolve_drill(None, REPO / "runbooks"))
    monkeypatch.setenv("CLAMPDOWN_SLACK_BOT_TOKEN", "xoxb-real")
    keys = Secrets()
    url = "http://127.0.0.1:5001/api/"
    with drill_environment(
        drill,
        tmp_path,
        keys,
        aws_endpoint="http://x:1",
        slack_url=url,
        allowed_signers=tmp_path.parent / "allowed_signers",
    ):
        assert os.environ["CLAMPDOWN_SLACK_BOT_TOKEN"] == keys.slack_token
        assert os.environ["CLAMPDOWN_SLACK_API_URL"] == url
    assert os.environ["CLAMPDOWN_SLACK_BOT_TOKEN"] == "xoxb-real"
