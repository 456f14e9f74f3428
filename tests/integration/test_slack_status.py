"""slack.status with the real slack_sdk WebClient against the local Slack stand-in:
the run's status thread, drill marking, retries, and Slack failures that never stop a run."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler
from slack_sdk.http_retry.builtin_handlers import ServerErrorRetryHandler

from clampdown.core.actions import ActionContext, registry
from clampdown_slack.client import SlackNotConfigured, SlackSettings, slack_client
from clampdown_slack.status import SlackStatus
from clampdown_slack.testing.standin import SlackStandIn

TOKEN = "xoxb-1111-2222-standintoken"
CHANNEL = "#incident-response"
CHANNEL_ID = "C0INCIDENT"


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch):
    """A running stand-in, and the environment pointing clampdown at it (short back-off)."""
    with SlackStandIn(token=TOKEN, usergroups={"S0ONCALL": ["U0ALICE", "U0BOB"]}) as standin:
        monkeypatch.setenv("CLAMPDOWN_SLACK_BOT_TOKEN", TOKEN)
        monkeypatch.setenv("CLAMPDOWN_SLACK_CHANNEL", CHANNEL)
        monkeypatch.setenv("CLAMPDOWN_SLACK_API_URL", standin.url)
        monkeypatch.setenv("CLAMPDOWN_SLACK_RETRY_INTERVAL", "0")
        monkeypatch.setenv("CLAMPDOWN_SLACK_MAX_RETRIES", "3")
        yield standin


def status(ctx: ActionContext, **with_) -> SlackStatus.Output:
    action = SlackStatus()
    return action.run(action.Input(**with_), ctx)


def posted_params(standin: SlackStandIn) -> list[dict]:
    return [c.params for c in standin.calls_to("chat.postMessage") if c.status == 200]


# --- the run's status thread -----------------------------------------------------------------


def test_first_status_posts_the_parent_and_later_ones_reply_in_its_thread(
    slack, action_ctx, clampdown_home: Path
):
    first = status(action_ctx, text="Suspected model theft by arn:aws:iam::123456789012:user/eve")
    second = status(replace(action_ctx, step_id="revoke"), text="Credentials revoked")

    assert first.posted and first.error is None
    assert first.channel == CHANNEL_ID  # Slack answers with the id for a #name
    assert first.thread_ts == first.ts
    assert second.posted and second.thread_ts == first.ts and second.ts != first.ts
    parent, reply = slack.thread(CHANNEL_ID, first.ts)
    assert parent["text"].startswith("Suspected model theft") and "thread_ts" not in parent
    assert (reply["text"], reply["thread_ts"]) == ("Credentials revoked", first.ts)
    assert "thread_ts" not in posted_params(slack)[0]
    assert posted_params(slack)[1]["thread_ts"] == first.ts
    assert all(c.headers["Authorization"] == f"Bearer {TOKEN}" for c in slack.calls)
    saved = json.loads((clampdown_home / "runs" / "testrun0001" / "slack.json").read_text())
    assert saved["threads"][CHANNEL] == {"channel": CHANNEL_ID, "thread_ts": first.ts}


def test_ts_values_are_unique_and_increasing(slack, action_ctx):
    seen = [status(action_ctx, text=f"update {i}").ts for i in range(4)]
    assert seen == sorted(seen, key=float) and len(set(seen)) == 4
    assert all(len(ts.split(".")[1]) == 6 for ts in seen)


def test_each_run_has_its_own_thread(slack, action_ctx):
    one = status(action_ctx, text="run one")
    two = status(replace(action_ctx, run_id="testrun0002"), text="run two")
    assert one.thread_ts != two.thread_ts
    assert [m["text"] for m in slack.messages(CHANNEL_ID) if "thread_ts" not in m] == [
        "run one",
        "run two",
    ]


def test_thread_false_posts_a_message_of_its_own_and_leaves_the_thread_alone(
    slack, action_ctx, clampdown_home: Path
):
    alone = status(action_ctx, text="all hands: incident declared", thread=False)
    parent = status(action_ctx, text="status thread")
    later = status(action_ctx, text="outside again", thread=False)

    assert alone.posted and alone.thread_ts is None
    assert parent.thread_ts == parent.ts != alone.ts
    assert later.thread_ts is None
    assert all("thread_ts" not in p for p in posted_params(slack))
    saved = json.loads((clampdown_home / "runs" / "testrun0001" / "slack.json").read_text())
    assert saved["threads"][CHANNEL]["thread_ts"] == parent.ts


def test_a_step_naming_the_channel_by_id_replies_in_the_same_thread(slack, action_ctx):
    parent = status(action_ctx, text="by name")
    reply = status(action_ctx, text="by id", channel=CHANNEL_ID)
    assert reply.thread_ts == parent.ts


def test_another_channel_gets_its_own_thread(slack, action_ctx):
    main = status(action_ctx, text="to the incident channel")
    legal = status(action_ctx, text="to legal", channel="#legal")
    assert legal.posted and legal.channel != main.channel
    assert legal.thread_ts == legal.ts != main.thread_ts


def test_parallel_steps_of_one_run_share_one_thread(slack, action_ctx):
    slack.slow(0.2)  # widen the window in which two steps could both post a parent
    steps = [replace(action_ctx, step_id=f"step_{i}") for i in range(4)]
    start = threading.Barrier(len(steps))

    def post(ctx: ActionContext) -> SlackStatus.Output:
        start.wait()
        return status(ctx, text=f"from {ctx.step_id}")

    with ThreadPoolExecutor(len(steps)) as pool:
        results = list(pool.map(post, steps))

    assert all(r.posted for r in results)
    parents = [m for m in slack.messages(CHANNEL_ID) if "thread_ts" not in m]
    assert len(parents) == 1
    assert {r.thread_ts for r in results} == {parents[0]["ts"]}
    assert len(slack.thread(CHANNEL_ID, parents[0]["ts"])) == 4


def test_an_unreadable_thread_file_starts_a_new_thread_with_a_warning(
    slack, action_ctx, clampdown_home: Path, caplog
):
    state = clampdown_home / "runs" / "testrun0001" / "slack.json"
    state.parent.mkdir(parents=True)
    state.write_text("{not json", encoding="utf-8")
    out = status(action_ctx, text="hello")
    assert out.posted and out.thread_ts == out.ts
    assert "is unreadable" in caplog.text
    assert json.loads(state.read_text())["threads"][CHANNEL]["thread_ts"] == out.ts


def test_drill_runs_mark_every_message(slack, action_ctx):
    drill = replace(action_ctx, drill=True)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Contained*"}}]
    parent = status(drill, text="Suspected model theft")
    reply = status(drill, text="Contained", blocks=blocks)

    texts = [m["text"] for m in slack.thread(CHANNEL_ID, parent.ts)]
    assert texts == ["[DRILL] Suspected model theft", "[DRILL] Contained"]
    sent_blocks = slack.thread(CHANNEL_ID, reply.thread_ts)[1]["blocks"]
    assert "[DRILL]" in sent_blocks[0]["elements"][0]["text"]
    assert sent_blocks[1:] == blocks


def test_real_runs_are_not_marked_as_drills(slack, action_ctx):
    status(action_ctx, text="Suspected model theft")
    assert slack.messages(CHANNEL_ID)[0]["text"] == "Suspected model theft"


# --- retries -----------------------------------------------------------------------------------


def test_ratelimited_twice_then_posted(slack, action_ctx):
    slack.fail_next("chat.postMessage", 2, "ratelimited", retry_after=0)
    out = status(action_ctx, text="after the rate limit")
    assert out.posted and out.error is None
    assert [c.status for c in slack.calls_to("chat.postMessage")] == [429, 429, 200]
    assert [m["text"] for m in slack.messages(CHANNEL_ID)] == ["after the rate limit"]


def test_server_error_then_posted(slack, action_ctx):
    slack.fail_next("chat.postMessage", 1, "server_error")
    out = status(action_ctx, text="after a 500")
    assert out.posted
    assert [c.status for c in slack.calls_to("chat.postMessage")] == [500, 200]


def test_retries_are_bounded_and_a_missed_parent_is_posted_by_the_next_step(
    slack, action_ctx, monkeypatch
):
    monkeypatch.setenv("CLAMPDOWN_SLACK_MAX_RETRIES", "1")
    slack.fail_next("chat.postMessage", 2, "server_error")
    missed = status(action_ctx, text="lost")
    assert not missed.posted
    assert "internal_error (HTTP 500, gave up after 1 retries)" in missed.error
    assert [c.status for c in slack.calls] == [500, 500]

    later = status(action_ctx, text="next step")
    assert later.posted and later.thread_ts == later.ts  # it starts the thread


# --- Slack failures never stop the run ------------------------------------------------------


def test_slack_down_is_recorded_not_raised_and_no_token_leaks(slack, action_ctx, caplog):
    caplog.set_level(logging.DEBUG)
    slack.down()
    out = status(action_ctx, text="Revoking credentials")

    assert out.posted is False and out.ts is None
    assert out.error == (
        "Slack chat.postMessage failed: service_unavailable (HTTP 503, gave up after 3 retries)"
    )
    assert len(slack.calls) == 4  # first attempt + 3 retries
    assert TOKEN not in out.model_dump_json()
    assert TOKEN not in caplog.text
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any(out.error in r.getMessage() for r in warnings)

    slack.up()
    assert status(action_ctx, text="back").posted


def test_a_missed_reply_names_the_thread_it_belonged_to(slack, action_ctx):
    parent = status(action_ctx, text="parent")
    slack.down()
    missed = status(action_ctx, text="reply")
    assert not missed.posted
    assert (missed.channel, missed.thread_ts) == (CHANNEL_ID, parent.ts)


def test_slack_unreachable_is_recorded_not_raised(slack, action_ctx, caplog):
    caplog.set_level(logging.DEBUG)
    url = slack.url
    slack.stop()
    out = status(action_ctx, text="nobody listening")
    assert not out.posted
    assert out.error.startswith(f"Slack chat.postMessage failed: cannot reach {url}: ")
    assert "gave up after 3 retries" in out.error
    assert TOKEN not in out.error and TOKEN not in caplog.text


def test_wrong_token_is_invalid_auth_without_the_token(slack, action_ctx, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "xoxb-9999-wrong-token"
    monkeypatch.setenv("CLAMPDOWN_SLACK_BOT_TOKEN", wrong)
    out = status(action_ctx, text="hello")
    assert not out.posted
    assert out.error == (
        "Slack chat.postMessage failed: invalid_auth"
        " — check CLAMPDOWN_SLACK_BOT_TOKEN (the Slack app's bot token, xoxb-…)"
    )
    assert [c.status for c in slack.calls] == [200]  # an API error is not retried
    assert wrong not in caplog.text and TOKEN not in caplog.text


def test_unknown_channel_is_reported_with_a_hint(slack, action_ctx):
    slack.auto_channels = False
    out = status(action_ctx, text="hello", channel="#nowhere")
    assert not out.posted
    assert out.error == (
        "Slack chat.postMessage failed: channel_not_found"
        " — check the channel (CLAMPDOWN_SLACK_CHANNEL or with: channel)"
    )


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unset", "expected"),
    [
        (
            ["CLAMPDOWN_SLACK_BOT_TOKEN"],
            "Slack is not configured: set CLAMPDOWN_SLACK_BOT_TOKEN"
            " (the Slack app's bot token, xoxb-…)",
        ),
        (
            ["CLAMPDOWN_SLACK_CHANNEL"],
            "Slack is not configured: set CLAMPDOWN_SLACK_CHANNEL (or give the step with: channel)",
        ),
        (
            ["CLAMPDOWN_SLACK_BOT_TOKEN", "CLAMPDOWN_SLACK_CHANNEL"],
            "Slack is not configured: set CLAMPDOWN_SLACK_BOT_TOKEN"
            " (the Slack app's bot token, xoxb-…) and CLAMPDOWN_SLACK_CHANNEL"
            " (or give the step with: channel)",
        ),
    ],
)
def test_missing_configuration_says_which_variable_to_set(
    slack, action_ctx, monkeypatch, caplog, unset, expected
):
    for name in unset:
        monkeypatch.delenv(name)
    out = status(action_ctx, text="hello")
    assert (out.posted, out.error) == (False, expected)
    assert slack.calls == []
    assert expected in caplog.text


def test_blank_token_counts_as_missing(slack, action_ctx, monkeypatch):
    monkeypatch.setenv("CLAMPDOWN_SLACK_BOT_TOKEN", "  ")
    out = status(action_ctx, text="hello")
    assert out.error.startswith("Slack is not configured: set CLAMPDOWN_SLACK_BOT_TOKEN")


def test_the_step_channel_replaces_a_missing_default(slack, action_ctx, monkeypatch):
    monkeypatch.delenv("CLAMPDOWN_SLACK_CHANNEL")
    out = status(action_ctx, text="hello", channel=CHANNEL_ID)
    assert out.posted and out.channel == CHANNEL_ID


def test_invalid_setting_is_reported_not_raised(slack, action_ctx, monkeypatch):
    monkeypatch.setenv("CLAMPDOWN_SLACK_MAX_RETRIES", "lots")
    out = status(action_ctx, text="hello")
    assert not out.posted
    assert out.error.startswith("invalid Slack setting: CLAMPDOWN_SLACK_MAX_RETRIES: ")


def test_inputs_are_validated(action_ctx):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="text"):
        SlackStatus.Input(text="")
    with pytest.raises(ValidationError, match="colour"):
        SlackStatus.Input(text="hi", colour="red")


def test_action_declaration():
    assert SlackStatus.name == "slack.status"
    assert SlackStatus.destructive is False and SlackStatus.iam_actions == ()
    assert set(SlackStatus.Output.model_fields) == {
        "posted",
        "channel",
        "ts",
        "thread_ts",
        "error",
    }


# --- the client ----------------------------------------------------------------------------------


def test_client_defaults_to_slack_with_bounded_retry_handlers():
    client = slack_client(SlackSettings(slack_bot_token="xoxb-x"))
    assert isinstance(client, WebClient)
    assert client.base_url == "https://slack.com/api/"
    handlers = {type(h): h.max_retry_count for h in client.retry_handlers}
    assert handlers == {
        ConnectionErrorRetryHandler: 3,
        RateLimitErrorRetryHandler: 3,
        ServerErrorRetryHandler: 3,
    }


def test_client_adds_the_slash_slack_sdk_needs(slack):
    client = slack_client(SlackSettings(slack_bot_token=TOKEN, slack_api_url=slack.url[:-1]))
    assert client.conversations_info(channel=CHANNEL_ID)["channel"]["id"] == CHANNEL_ID


def test_client_without_a_token_names_the_variable():
    with pytest.raises(SlackNotConfigured, match="CLAMPDOWN_SLACK_BOT_TOKEN"):
        slack_client(SlackSettings())


def test_settings_repr_hides_the_token(monkeypatch):
    monkeypatch.setenv("CLAMPDOWN_SLACK_BOT_TOKEN", TOKEN)
    assert TOKEN not in repr(SlackSettings())


# --- the stand-in itself -----------------------------------------------------------------------


@pytest.fixture
def client(slack) -> WebClient:
    return slack_client(SlackSettings(slack_bot_token=TOKEN, slack_api_url=slack.url))


def test_standin_update_ephemeral_usergroups_and_conversations(slack, client):
    sent = client.chat_postMessage(channel=CHANNEL_ID, text="pending approval")
    updated = client.chat_update(channel=CHANNEL_ID, ts=sent["ts"], text="approved by U0ALICE")
    assert updated["ts"] == sent["ts"]
    assert slack.messages(CHANNEL_ID)[0]["text"] == "approved by U0ALICE"
    assert "edited" in slack.messages(CHANNEL_ID)[0]

    client.chat_postEphemeral(channel=CHANNEL_ID, user="U0EVE", text="you may not approve")
    assert [(e["user"], e["text"]) for e in slack.ephemeral] == [("U0EVE", "you may not approve")]

    # slack-sdk sends these two form-encoded
    assert client.usergroups_users_list(usergroup="S0ONCALL")["users"] == ["U0ALICE", "U0BOB"]
    assert (
        slack.calls_to("usergroups.users.list")[0]
        .headers["Content-Type"]
        .startswith("application/x-www-form-urlencoded")
    )
    info = client.conversations_info(channel=CHANNEL)["channel"]
    assert (info["id"], info["name"]) == (CHANNEL_ID, "incident-response")


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda c: c.usergroups_users_list(usergroup="S0NOPE"), "no_such_subteam"),
        (lambda c: c.chat_update(channel=CHANNEL_ID, ts="1.000001", text="x"), "message_not_found"),
        (lambda c: c.conversations_info(channel="C0MISSING"), "channel_not_found"),
        (
            lambda c: c.chat_postMessage(channel=CHANNEL_ID, text="x", thread_ts="1.0"),
            "thread_not_found",
        ),
        (lambda c: c.api_call("chat.delete"), "unknown_method"),
    ],
)
def test_standin_api_errors_look_like_slack(slack, client, call, error):
    with pytest.raises(SlackApiError) as caught:
        call(client)
    assert (caught.value.response.status_code, caught.value.response["error"]) == (200, error)


def _raw(url: str, headers: dict[str, str], body: bytes = b"{}") -> tuple[int, dict, dict]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def test_standin_failure_modes_on_the_wire(slack):
    url = slack.url + "chat.postMessage"
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    slack.fail_next("chat.postMessage", 1, "ratelimited")
    status_code, headers, body = _raw(url, auth)
    assert (status_code, headers["Retry-After"], body) == (
        429,
        "1",
        {"ok": False, "error": "ratelimited"},
    )
    slack.fail_next(mode="server_error")  # any method
    assert _raw(slack.url + "conversations.info", auth)[0] == 500
    slack.down()
    assert _raw(url, auth)[0] == 503
    slack.up()
    assert _raw(url, {"Content-Type": "application/json"})[2]["error"] == "not_authed"
    assert _raw(url, {**auth, "Authorization": "Bearer xoxb-other"})[2]["error"] == "invalid_auth"
    assert [c.status for c in slack.calls] == [429, 500, 503, 200, 200]
    with pytest.raises(ValueError, match="unknown failure mode"):
        slack.fail_next("chat.postMessage", 1, "teapot")  # type: ignore[arg-type]


def test_standin_accepts_a_token_in_a_form_body(slack):
    body = f"token={TOKEN}&channel={CHANNEL_ID}&text=hi".encode()
    code, _, answer = _raw(
        slack.url + "chat.postMessage",
        {"Content-Type": "application/x-www-form-urlencoded"},
        body,
    )
    assert (code, answer["ok"], answer["message"]["text"]) == (200, True, "hi")


def test_standin_url_needs_a_started_server():
    standin = SlackStandIn()
    with pytest.raises(RuntimeError, match="not started"):
        _ = standin.url


# --- in a real run: the miss is on the record ---------------------------------------------


@pytest.mark.usefixtures("prefect_server")
def test_slack_down_during_a_run_does_not_stop_containment(slack, write_runbook):
    from clampdown.core.ledger import new_run_id, read
    from clampdown.core.settings import settings
    from clampdown_flows.respond import respond

    if "slack.status" not in registry():  # until the entry point is declared
        registry().register(SlackStatus)
    path = write_runbook(
        """\
apiVersion: clampdown/v1
kind: Runbook
metadata: {name: slack-down, title: Slack down, severity: low}
steps:
  - {id: announce, uses: slack.status, with: {text: "Containing"}}
  - {id: contain, uses: core.set_output, needs: [announce], with: {contained: true}}
  - {id: report, uses: slack.status, needs: [contain], with: {text: "Contained"}}
"""
    )
    slack.down()
    run_id = new_run_id()
    summary = asyncio.run(respond(str(path), {}, run_id=run_id, drill=True))

    assert summary["status"] == "succeeded"
    assert summary["steps"] == {
        "announce": "succeeded",
        "contain": "succeeded",
        "report": "succeeded",
    }
    ends = {r["step"]: r for r in read(settings().ledger_path(run_id)) if r["type"] == "step.end"}
    for step in ("announce", "report"):
        outputs = ends[step]["outputs"]
        assert outputs["posted"] is False
        assert "service_unavailable" in outputs["error"]
    assert TOKEN not in settings().ledger_path(run_id).read_text()
    assert all(c.params["text"].startswith("[DRILL] ") for c in slack.calls)
