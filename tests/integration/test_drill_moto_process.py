"""The drill's simulated AWS runs in a process of its own, on a socket the drill made.

The first request is made at once, while moto may still be importing (it waits in the
socket's backlog); the account is moto's (a bucket made is listed); when the block ends
the process is gone; and a moto process that dies is reported with its exit status
instead of leaving the drill's requests hanging.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError

from clampdown.app.drill import world


def _s3(url: str) -> object:
    return boto3.session.Session().client(
        "s3",
        region_name="us-east-1",
        endpoint_url=url,
        aws_access_key_id="AKIADRILLDUMMY000000",
        aws_secret_access_key="dummy",
        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30),
    )


def test_moto_serves_from_its_own_process_and_stops_with_the_block(tmp_path: Path) -> None:
    log = tmp_path / "moto.log"
    with world.moto_server(log) as moto:
        assert moto.process.pid != os.getpid()
        s3 = _s3(moto.url)
        s3.create_bucket(Bucket="drill-evidence")  # type: ignore[attr-defined]
        names = [b["Name"] for b in s3.list_buckets()["Buckets"]]  # type: ignore[attr-defined]
        assert names == ["drill-evidence"]
        assert moto.failure() is None
    assert moto.process.poll() == 0  # it exited when its standard input closed


def test_a_moto_process_that_died_is_reported_and_refuses_requests(tmp_path: Path) -> None:
    log = tmp_path / "moto.log"
    with world.moto_server(log) as moto:
        _s3(moto.url).list_buckets()  # type: ignore[attr-defined]
        os.kill(moto.process.pid, signal.SIGKILL)
        moto.process.wait(10)
        failure = moto.failure()
        assert failure is not None and "exited (-9)" in failure
        with pytest.raises(EndpointConnectionError):
            _s3(moto.url).list_buckets()  # type: ignore[attr-defined]


def test_moto_gets_no_secret_of_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAMPDOWN_SLACK_BOT_TOKEN", "xoxb-not-for-moto")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-moto-either")
    with world.moto_server(tmp_path / "moto.log") as moto:
        _s3(moto.url).list_buckets()  # type: ignore[attr-defined]
        environ = Path(f"/proc/{moto.process.pid}/environ").read_bytes().split(b"\0")
    names = {entry.split(b"=", 1)[0] for entry in environ if entry}
    assert b"PATH" in names
    assert not {b"CLAMPDOWN_SLACK_BOT_TOKEN", b"AWS_SECRET_ACCESS_KEY"} & names, names


def test_preload_imports_the_named_backends_and_ignores_unknown_names() -> None:
    """In a fresh interpreter (this one may have imported moto's backends already)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from clampdown.app.drill.moto_process import preload\n"
        "before = 'moto.sagemaker.models' in sys.modules\n"
        "preload(['sagemaker', 'no-such-service'])\n"
        "print(before, 'moto.sagemaker.models' in sys.modules, 'moto.sagemaker.urls' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split() == ["False", "True", "True"]


def test_seed_services_are_those_the_seed_calls() -> None:
    from clampdown.core.drill_library import load_drill, resolve_drill

    library = Path(__file__).resolve().parents[2] / "runbooks"
    drill, _ = load_drill(resolve_drill("model-theft", library))
    assert world.seed_services(drill) == ["s3", "iam", "sagemaker", "cloudtrail", "logs"]
    sessions = drill.seed.model_copy(
        update={"roles": [r.model_copy(update={"sessions": 1}) for r in drill.seed.roles]}
    )
    bare = drill.seed.model_copy(
        update={"users": [], "roles": [], "endpoints": [], "trail": None, "log_groups": []}
    )
    assert "sts" in world.seed_services(drill.model_copy(update={"seed": sessions}))
    assert world.seed_services(drill.model_copy(update={"seed": bare})) == ["s3"]


def test_moto_serves_while_it_preloads(tmp_path: Path) -> None:
    with world.moto_server(tmp_path / "moto.log", ["sagemaker", "cloudtrail"]) as moto:
        s3 = _s3(moto.url)
        s3.create_bucket(Bucket="drill-evidence")  # type: ignore[attr-defined]
        assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["drill-evidence"]  # type: ignore[attr-defined]
        assert moto.failure() is None
        args = Path(f"/proc/{moto.process.pid}/cmdline").read_bytes().split(b"\0")
    assert args[-3:] == [b"sagemaker", b"cloudtrail", b""]


def _drill_seed() -> object:
    from clampdown.core.drill_library import load_drill, resolve_drill

    library = Path(__file__).resolve().parents[2] / "runbooks"
    drill, _ = load_drill(resolve_drill("model-theft", library))
    return drill.seed


def test_moto_seeds_the_world_it_serves(tmp_path: Path) -> None:
    """The seed runs in moto's process; what it made is what moto serves over HTTP."""
    from datetime import UTC, datetime

    spec: Any = _drill_seed()
    with world.moto_server(tmp_path / "moto.log", ["s3", "iam"]) as moto:
        seeded = moto.seed(spec, datetime.now(UTC))
        s3 = _s3(moto.url)
        buckets = {b["Name"] for b in s3.list_buckets()["Buckets"]}  # type: ignore[attr-defined]
        iam = boto3.session.Session().client(
            "iam",
            region_name="us-east-1",
            endpoint_url=moto.url,
            aws_access_key_id="AKIADRILLDUMMY000000",
            aws_secret_access_key="dummy",
        )
        keys = iam.list_access_keys(UserName="ml-pipeline-ci")["AccessKeyMetadata"]
        trail = s3.list_objects_v2(Bucket=spec.trail.bucket, Prefix="AWSLogs/")  # type: ignore[attr-defined]
    assert buckets == {spec.evidence_bucket, "acme-model-artifacts", spec.trail.bucket}
    assert [k["AccessKeyId"] for k in keys] == seeded.users["ml-pipeline-ci"]["access_keys"]
    assert sorted(o["Key"] for o in trail["Contents"]) == sorted(seeded.trail_objects)
    assert len(seeded.trail_records) > 50 and seeded.evidence_bucket == spec.evidence_bucket


def test_a_seed_moto_refuses_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from clampdown.core.diagnostics import ClampdownError

    spec: Any = _drill_seed()
    endpoints = [e.model_copy(update={"role": "no-such-role"}) for e in spec.endpoints]
    broken = spec.model_copy(update={"endpoints": endpoints})
    with world.moto_server(tmp_path / "moto.log") as moto:
        with pytest.raises(ClampdownError) as caught:
            moto.seed(broken, datetime.now(UTC))
        assert moto.failure() is None  # moto is still up: the seed failed, not moto
    assert "could not be seeded" in caught.value.message
    assert "KeyError: 'no-such-role'" in caught.value.message
    assert str(tmp_path / "moto.log") in (caught.value.hint or "")


def test_a_moto_that_died_before_the_seed_is_reported(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from clampdown.core.diagnostics import ClampdownError

    with world.moto_server(tmp_path / "moto.log") as moto:
        os.kill(moto.process.pid, signal.SIGKILL)
        moto.process.wait(10)
        with pytest.raises(ClampdownError) as caught:
            moto.seed(_drill_seed(), datetime.now(UTC))  # type: ignore[arg-type]
    assert "failed while the drill seeded it" in caught.value.message
    assert "exited (-9)" in caught.value.message


def test_the_seeds_clients_share_motos_botocore_models() -> None:
    """moto reads each service's botocore model in a boto3 session of its own (to list the
    service's regions); the seed's clients are made from that session, so in moto's process
    each model file is parsed once, not once for moto and once for the seed."""
    from moto.core.base_backend import AccountSpecificBackend

    from clampdown.app.drill.moto_process import sdk_session

    session = sdk_session()
    assert session is AccountSpecificBackend.get_session()
    assert session.client("iam", region_name="us-east-1")._loader is session._loader  # type: ignore[attr-defined]
