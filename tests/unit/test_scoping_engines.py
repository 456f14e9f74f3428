"""The embedded DuckDB scan on hand-made trail files of a few events (look-behind, chains
minted in passed-over files, escapes, files that cannot be fetched again), inflating,
Athena's polling and the IAM actions each engine needs. Both engines on the seeded traffic
(the same answer), and a 40 MB file inflated in bounded pieces, are in
tests/integration/test_scoping_engines_data.py: they scan the whole data set."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from clampdown_aws.forensics import rollup
from clampdown_aws.forensics.athena import AthenaQueryFailed, AthenaRunner
from clampdown_aws.forensics.embedded import EmbeddedScan, Malformed, connect
from clampdown_aws.forensics.exfiltration import Model, ScopeExfiltration
from clampdown_aws.forensics.principal import parse_principal
from clampdown_aws.forensics.trail_reader import TrailFileError, inflate
from clampdown_aws.testing import trail_files as tf

ACCOUNT = tf.ACCOUNT
START = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)
END = START + timedelta(hours=3)
T0 = START.replace(tzinfo=None)
MB = 1048576
MODELS = [Model(name="llm", bucket="models", prefix="llm-v3/")]
thief = tf.user("mallory", "AKIAMALLORY000000001")
hop1 = tf.session("exporter", "hop1", "ASIAHOP1000000000001")
hop2 = tf.session("archiver", "hop2", "ASIAHOP2000000000001")


def _file(folder: Path, name: str, events: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps({"Records": events}))
    return path


def test_look_behind_matches_a_session_delivered_before_its_assume_role(tmp_path: Path) -> None:
    """The session's read (us-west-2) is scanned a batch before the AssumeRole that minted its
    key. That file holds no call of the suspect, so it is passed over (not narrowed, no
    look-behind Parquet), its calling keys listed; when the AssumeRole reveals the key, the
    file is read again and the read is found. Files whose events are all more than 30
    minutes older than the newest event are forgotten: the look-behind stays small on disk
    and nothing of it is held in memory but its minting events and the listed keys."""
    at = T0 + timedelta(hours=1)
    files = tmp_path / "files"
    early = _file(
        files,
        "west.json",
        [
            tf.s3_read(
                hop1,
                at + timedelta(minutes=2),
                "models",
                "llm-v3/early.bin",
                size=MB,
                region="us-west-2",
                seq=1,
            )
        ],
    )
    mint = _file(
        files,
        "east.json",
        [
            tf.assume_role(
                thief, at + timedelta(minutes=1), "exporter", "hop1", "ASIAHOP1000000000001", seq=2
            )
        ],
    )
    behind = tmp_path / "behind"
    con = connect(tmp_path, "256MB", 1)
    scan = EmbeddedScan(con, parse_principal("mallory", ACCOUNT), START, END, behind)
    scan.scan([early])
    assert not list(behind.glob("*.parquet")) and scan.stats.suspect_files == 0
    assert con.execute("SELECT key FROM skipped").fetchall() == [("ASIAHOP1000000000001",)]
    scan.scan([mint])
    assert {o["key"] for o in _rolled(con)} == {"llm-v3/early.bin"}
    assert scan.keys == {"ASIAHOP1000000000001"}
    assert (scan.stats.suspect_files, scan.stats.reread, scan.stats.records) == (1, 1, 2)
    assert len(list(behind.glob("*.parquet"))) == 1  # the mint and the read, read again

    later = [
        _file(
            files,
            f"later-{n}.json",
            list(tf.Traffic(at + timedelta(hours=n), every=60.0).records(3)),
        )
        for n in (1, 2)
    ]
    scan.scan(later[:1])
    scan.scan(later[1:])
    assert not list(behind.glob("*.parquet"))  # the later files are not the suspect's
    assert con.execute("SELECT count(*) FROM mints").fetchone()[0] == 0
    assert con.execute("SELECT count(DISTINCT file) FROM skipped").fetchone()[0] == 1
    scan.close()
    assert con.execute("SELECT count(*) FROM skipped").fetchone()[0] == 0


def test_a_chain_minted_in_passed_over_files_is_read_again_round_by_round(
    tmp_path: Path,
) -> None:
    """hop1 (minted by the thief) mints hop2, and hop2 reads: both files are delivered, and
    passed over, before the thief's AssumeRole; the scan is given them again through
    ``reread`` (the caller deleted its copies), one round per newly revealed key."""
    at = T0 + timedelta(hours=1)
    files = tmp_path / "files"
    hop = _file(
        files,
        "hop.json",
        [
            tf.assume_role(
                hop1, at + timedelta(minutes=2), "archiver", "hop2", "ASIAHOP2000000000001", seq=3
            )
        ],
    )
    read = _file(
        files,
        "read.json",
        [tf.s3_read(hop2, at + timedelta(minutes=3), "models", "llm-v3/far.bin", size=MB, seq=4)],
    )
    mint = _file(
        files,
        "mint.json",
        [
            tf.assume_role(
                thief, at + timedelta(minutes=1), "exporter", "hop1", "ASIAHOP1000000000001", seq=2
            )
        ],
    )
    kept = {name: path.read_bytes() for name, path in (("hop", hop), ("read", read))}
    asked: list[list[str]] = []

    def reread(sources: list[str]) -> tuple[dict[Path, str], list[Malformed]]:
        asked.append(sources)
        again = {}
        for source in sources:
            copy = tmp_path / "again" / source
            copy.parent.mkdir(exist_ok=True)
            copy.write_bytes(kept[source])
            again[copy] = source
        return again, []

    con = connect(tmp_path, "256MB", 1)
    scan = EmbeddedScan(
        con, parse_principal("mallory", ACCOUNT), START, END, tmp_path / "behind", reread
    )
    scan.scan({hop: "hop", read: "read"})
    hop.unlink()
    read.unlink()
    scan.scan({mint: "mint"})
    assert asked == [["hop"], ["read"]]
    assert scan.keys == {"ASIAHOP1000000000001", "ASIAHOP2000000000001"}
    assert {o["key"] for o in _rolled(con)} == {"llm-v3/far.bin"}
    assert not scan.stats.malformed


def test_the_suspect_written_with_json_escapes_is_still_the_suspect(tmp_path: Path) -> None:
    """A file is passed over only when the parsed identity fields say so: an ARN written with
    escapes (valid JSON, same string) is found, where a substring test on the raw text would
    have passed over the file. A forged eventTime outside the window does not break or age
    the scan."""
    read = tf.s3_read(thief, T0 + timedelta(hours=1), "models", "llm-v3/x.bin", size=MB, seq=1)
    text = json.dumps({"Records": [read]}).replace(
        "arn:aws:iam::123456789012:user/mallory", "arn:aws:iam::123456789012:user\\/m\\u0061llory"
    )
    assert "user/mallory" not in text and "AKIAMALLORY" in text
    text = text.replace("AKIAMALLORY000000001", "AKIA\\u004dALLORY000000001")
    forged = tf.s3_read(hop1, T0, "models", "llm-v3/y.bin", seq=2)
    forged["eventTime"] = "9999-zz"
    path = tmp_path / "escaped.json"
    path.write_text(text)
    other = _file(tmp_path, "forged.json", [forged])
    con = connect(tmp_path, "256MB", 1)
    scan = EmbeddedScan(
        con,
        parse_principal("arn:aws:iam::123456789012:user/mallory", ACCOUNT),
        START,
        END,
        tmp_path / "behind",
    )
    scan.scan([path, other])
    assert {o["key"] for o in _rolled(con)} == {"llm-v3/x.bin"}
    assert scan.stats.suspect_files == 1 and scan.stats.records == 2


def _rolled(con: Any) -> list[dict[str, Any]]:
    rollup.roll_up(con, MODELS)
    return rollup.objects(con, None)


def test_inflate_reports_truncated_and_non_gzip_streams(tmp_path: Path) -> None:

    body = gzip.compress(b'{"Records": []}' * 1000)
    whole = tmp_path / "whole.json"
    inflate([body[:10], body[10:]], whole)
    assert whole.read_bytes() == b'{"Records": []}' * 1000
    two_members = tmp_path / "two.json"
    inflate([gzip.compress(b'{"Records": '), gzip.compress(b"[]}")], two_members)
    assert two_members.read_bytes() == b'{"Records": []}'
    with pytest.raises(TrailFileError, match="truncated gzip"):
        inflate([body[: len(body) // 2]], tmp_path / "cut.json")
    with pytest.raises(TrailFileError, match="not valid gzip"):
        inflate([b'{"Records": []}'], tmp_path / "plain.json")


class FakeAthena:
    """Just enough of the Athena client to drive AthenaRunner through its states."""

    def __init__(
        self, states: list[str], pages: list[list[list[str | None]]] | None = None
    ) -> None:
        self.states = states
        self.pages = pages or [[["minted_key"]]]
        self.calls: list[tuple[str, dict]] = []

    def start_query_execution(self, **kwargs: Any) -> dict:
        self.calls.append(("start", kwargs))
        return {"QueryExecutionId": "q-1"}

    def get_query_execution(self, QueryExecutionId: str) -> dict:
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return {
            "QueryExecution": {
                "Status": {"State": state, "StateChangeReason": "SYNTAX_ERROR: line 1"}
            }
        }

    def stop_query_execution(self, QueryExecutionId: str) -> None:
        self.calls.append(("stop", {"QueryExecutionId": QueryExecutionId}))

    def get_paginator(self, name: str) -> Any:
        pages = self.pages

        class Pages:
            def paginate(self, **_: Any) -> Any:
                for page in pages:
                    yield {
                        "ResultSet": {
                            "Rows": [
                                {"Data": [{"VarCharValue": v} if v else {} for v in row]}
                                for row in page
                            ]
                        }
                    }

        return Pages()


def test_athena_runner_polls_until_success_and_reads_every_page() -> None:
    sleeps: list[float] = []
    fake = FakeAthena(
        ["QUEUED", "RUNNING", "RUNNING", "SUCCEEDED"],
        [[["minted_key", "n"], ["ASIA1", "1"]], [["ASIA2", None]]],
    )
    runner = AthenaRunner(fake, "security", "s3://out/", "ir", sleep=sleeps.append)
    assert runner("SELECT 1") == [
        {"minted_key": "ASIA1", "n": "1"},
        {"minted_key": "ASIA2", "n": None},
    ]
    assert sleeps == [0.2, 0.4, 0.8]
    start = fake.calls[0][1]
    assert start == {
        "QueryString": "SELECT 1",
        "QueryExecutionContext": {"Database": "security"},
        "WorkGroup": "ir",
        "ResultConfiguration": {"OutputLocation": "s3://out/"},
    }


@pytest.mark.parametrize("state", ["FAILED", "CANCELLED"])
def test_athena_failure_states_name_the_reason(state: str) -> None:
    runner = AthenaRunner(
        FakeAthena(["RUNNING", state]), "security", "s3://out/", "ir", sleep=lambda s: None
    )
    with pytest.raises(AthenaQueryFailed, match=f"q-1 {state}: SYNTAX_ERROR: line 1"):
        runner("SELECT 1")


def test_athena_query_that_never_ends_is_stopped() -> None:
    fake = FakeAthena(["RUNNING"])
    runner = AthenaRunner(fake, "security", "s3://out/", "ir", sleep=lambda s: None, timeout=3.0)
    with pytest.raises(AthenaQueryFailed, match="still RUNNING after 3 s: stopped"):
        runner("SELECT 1")
    assert fake.calls[-1] == ("stop", {"QueryExecutionId": "q-1"})


def test_iam_actions_athena_only_for_the_athena_engine() -> None:
    declared = ScopeExfiltration.iam_actions
    for name in (
        "cloudtrail:GetEventSelectors",
        "cloudtrail:GetTrailStatus",
        "cloudtrail:DescribeTrails",
        "s3:GetObject",
        "s3:ListBucket",
        "athena:StartQueryExecution",
    ):
        assert name in declared
    assert not any(a.startswith(("s3:Delete", "iam:", "s3:PutBucket")) for a in declared)
    assert ScopeExfiltration.destructive is False

    embedded = ScopeExfiltration.iam_resources(
        {"trail_bucket": "trail-logs", "trail_name": "org", "bucket": "ev"}
    )
    assert embedded["athena:StartQueryExecution"] == [] and embedded["glue:GetTable"] == []
    assert embedded["s3:GetObject"] == [
        "arn:aws:s3:::ev/incidents/*",
        "arn:aws:s3:::trail-logs/*AWSLogs/*",
    ]
    assert embedded["s3:ListBucket"] == ["arn:aws:s3:::ev", "arn:aws:s3:::trail-logs"]
    assert embedded["cloudtrail:GetEventSelectors"] == ["arn:aws:cloudtrail:*:*:trail/org"]
    unknown = ScopeExfiltration.iam_resources({"trail_bucket": "*"})
    assert unknown["s3:GetObject"][-1] == "arn:aws:s3:::*/AWSLogs/*"
    assert "cloudtrail:GetTrailStatus" not in unknown  # granted on "*" with a note

    athena = ScopeExfiltration.iam_resources(
        {
            "engine": "athena",
            "athena_database": "security",
            "athena_table": "cloudtrail_logs",
            "athena_output": "s3://athena-results/clampdown/",
            "athena_workgroup": "ir",
        }
    )
    assert athena["athena:StartQueryExecution"] == ["arn:aws:athena:*:*:workgroup/ir"]
    assert "arn:aws:glue:*:*:table/security/cloudtrail_logs" in athena["glue:GetTable"]
    assert athena["s3:GetBucketLocation"] == ["arn:aws:s3:::athena-results"]
    assert "athena:StartQueryExecution" not in ScopeExfiltration.iam_resources(
        {"engine": "*", "athena_workgroup": "{{ x }}"}
    )


def test_a_passed_over_file_that_cannot_be_fetched_again_is_reported(tmp_path: Path) -> None:
    """The session's read was passed over and its local copy deleted; when the AssumeRole
    reveals the key, fetching the file again fails (deleted from S3, access denied): the
    scan reports it as malformed instead of answering as if it had read it."""
    at = T0 + timedelta(hours=1)
    files = tmp_path / "files"
    read = _file(
        files,
        "read.json",
        [tf.s3_read(hop1, at + timedelta(minutes=2), "models", "llm-v3/x.bin", size=MB, seq=1)],
    )
    mint = _file(
        files,
        "mint.json",
        [
            tf.assume_role(
                thief, at + timedelta(minutes=1), "exporter", "hop1", "ASIAHOP1000000000001", seq=2
            )
        ],
    )

    def gone(sources: list[str]) -> tuple[dict[Path, str], list[Malformed]]:
        return {}, [Malformed(source, "cannot be read (NoSuchKey)") for source in sources]

    con = connect(tmp_path, "256MB", 1)
    scan = EmbeddedScan(
        con, parse_principal("mallory", ACCOUNT), START, END, tmp_path / "behind", gone
    )
    scan.scan({read: "AWSLogs/read.json.gz"})
    read.unlink()
    scan.scan({mint: "AWSLogs/mint.json.gz"})
    assert [(m.source, m.error) for m in scan.stats.malformed] == [
        (
            "AWSLogs/read.json.gz",
            "could not be read again for a key minted later: cannot be read (NoSuchKey)",
        )
    ]
    assert scan.keys == {"ASIAHOP1000000000001"} and not _rolled(con)
