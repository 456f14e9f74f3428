"""The drill's simulated AWS: moto's server in a process of its own, on a socket the drill made.

A drill is one Python process (serve, the flows' step threads, the Slack stand-in, the
follower) and shares one GIL. moto serving the simulated account in that process too
took a quarter of its active samples (every boto3 call's server side: parsing, the
backend, XML) and its imports (Flask, Jinja2, moto's core: about 1 CPU-s). In a process
of its own that work runs on the other core.

The drill binds and listens on a loopback socket itself and hands it to this process
(``pass_fds``), so the URL is known at once and a request made before moto has finished
importing waits in the socket's backlog instead of failing; the drill keeps no copy, so
if this process dies, the next request is refused rather than left hanging. This process
serves until its standard input closes (the drill ends, or dies), then stops.

Run as ``python -m clampdown.app.drill.moto_process FD [SERVICE]...``; it imports nothing
of clampdown's but this module until it is asked to seed, so it starts as fast as moto does.
moto imports a service's backend at its first request, holding the lock of its dispatch
(every other request waits); the services named are imported in a thread as soon as it
serves (:func:`preload`).

The drill's world is seeded here too (:func:`seed_request`): the first line the drill writes
to standard input is the seed (JSON), and the seeded facts come back as one line on standard
output. The seed runs on moto's own backends through moto's in-process mock (the state the
server serves, as moto documents for a server and its decorators in one process): the same
calls and the same account, with no HTTP round trip, and none of the seed's CPU on the
drill process's GIL, where Prefect and ``clampdown serve`` are importing meanwhile.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import logging
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any, TextIO

SEEDED = "clampdown-seeded "  # the answer line's prefix on standard output

NO_MOTO = 3  # exit status: moto is not installed


def list_moto_modules_once() -> None:
    """moto's server finds the service of every request in a fresh listing of its own
    package folder (``moto.backends.list_of_moto_modules``: ~175 ``stat`` calls, 2 ms at
    load 6), inside the lock that serialises its dispatch, so a drill's ~400 requests
    queued behind it (a profile of a drill: most of the moto threads' samples waited on
    that lock). The folder does not change while the process runs: it is listed once.
    Left alone when moto no longer has the function (a newer moto)."""
    from moto import backends

    listing = getattr(backends, "list_of_moto_modules", None)
    if listing is None or getattr(listing, "listed_once", False):
        return
    modules = tuple(listing())

    def listed() -> tuple[str, ...]:
        return modules

    listed.listed_once = True  # type: ignore[attr-defined]
    listed.__wrapped__ = listing  # type: ignore[attr-defined]
    backends.list_of_moto_modules = listed


def preload(services: Sequence[str]) -> None:
    """Import the backends of ``services`` (their models and URL maps) before their first
    request: the drill's seed asks for them one after another, and moto imports each at its
    first request inside the lock that serialises its dispatch (sagemaker's alone took
    0.3-0.4 s of a drill's seed). Imports only, outside that lock: requests for services
    already loaded go on meanwhile; a name moto does not know is left to its first request."""
    from moto import backends

    for name in services:
        with contextlib.suppress(Exception):
            backends.get_backend(name)  # type: ignore[arg-type]
            importlib.import_module(f"moto.{name}.urls")


def sdk_session() -> Any:
    """The boto3 session the seed's clients are made from: moto's own when it has one.

    moto reads the botocore models of each service it serves once more in a session of its
    own (to list the service's regions: the whole ``service-2`` model and ``endpoints.json``),
    which the seed's clients read too; made from moto's session, they share its loader, so
    each file is read once (sagemaker's model alone is ~0.05 CPU-s). Without that session
    (another moto), a session of the seed's own."""
    import boto3

    try:
        from moto.core.base_backend import AccountSpecificBackend

        return AccountSpecificBackend.get_session()
    except (ImportError, AttributeError):
        return boto3.session.Session()


def seed_request(line: str) -> dict[str, Any]:
    """Seed moto's backends with the drill's world; the answer: ``{"seeded": facts}`` (the
    fields of :class:`clampdown_aws.testing.seeded.Seeded`) or ``{"error": text}``.

    ``line``: ``{"seed": <the drill's seed>, "alert_time": <ISO 8601>}``. The seed's calls
    go to this process's backends through moto's mock (started without a reset, left
    running: stopping it would not matter, removing its data would wipe the world)."""
    from dataclasses import asdict
    from datetime import datetime

    try:
        from moto import mock_aws

        from clampdown.core.drill_model import Seed
        from clampdown_aws.testing.seed import seed

        request = json.loads(line)
        spec = Seed.model_validate(request["seed"])
        mock_aws().start(reset=False)
        session = sdk_session()
        clients: dict[str, Any] = {}

        def client(service: str) -> Any:
            if service not in clients:
                clients[service] = session.client(
                    service,
                    region_name=spec.region,
                    aws_access_key_id="AKIADRILLDUMMY000000",
                    aws_secret_access_key="drill-dummy-secret-not-a-real-key",
                )
            return clients[service]

        seeded = seed(spec, datetime.fromisoformat(request["alert_time"]), client)
    except Exception as exc:  # said to the drill, which stops with it
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"seeded": asdict(seeded)}


def _answer_seed(stdin: TextIO, stdout: TextIO) -> None:
    """Read the drill's seed (the first line of ``stdin``; none when it closes first) and
    write the answer on ``stdout``, one line after :data:`SEEDED`. Then Python's cyclic
    collector, off since the start (:func:`serve`), is back on, with what the imports and
    the seed built frozen out of its reach (:func:`_collect_from_now_on`)."""
    line = stdin.readline()
    if line.strip():
        answer = seed_request(line)
        _collect_from_now_on()
        stdout.write(SEEDED + json.dumps(answer) + "\n")
        stdout.flush()
    else:
        _collect_from_now_on()
    # nobody reads the pipe after the answer: anything moto prints later goes to its log
    # (a full pipe would block the thread that prints, and the requests it serves)
    with contextlib.suppress(OSError, ValueError):
        os.dup2(sys.stderr.fileno(), stdout.fileno())


def _collect_from_now_on() -> None:
    """Freeze everything alive (moto's and boto3's modules and models, the seeded account:
    they live as long as this process), then turn the cyclic collector back on.

    Why it was off: the imports and the seed build several hundred thousand long-lived
    objects, and the collector's passes over them took about a tenth of this process's CPU
    before the seed's answer, which the drill waits for. Frozen, the collections while the
    drill's requests are served walk only what those requests allocate."""
    gc.freeze()
    gc.enable()


def serve(fd: int, services: Sequence[str] = ()) -> int:
    """Serve moto on the listening socket ``fd`` until standard input closes; the backends
    of ``services`` are imported meanwhile (:func:`preload`). The cyclic collector is off
    until the seed is answered (:func:`_collect_from_now_on`)."""
    gc.disable()
    try:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server
    except ImportError as exc:
        print(f"moto is not installed: {exc}", file=sys.stderr)
        return NO_MOTO
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    list_moto_modules_once()
    app = DomainDispatcherApplication(create_backend_app)
    # host and port are those of the socket ``fd`` (make_server only checks them)
    server = make_server("127.0.0.1", 0, app, True, request_handler=MotoRequestHandler, fd=fd)
    threading.Thread(target=server.serve_forever, name="moto", daemon=True).start()
    if services:
        threading.Thread(target=preload, args=(services,), name="moto-preload", daemon=True).start()
    _answer_seed(sys.stdin, sys.stdout)
    sys.stdin.read()  # until the drill closes it (or exits)
    # The simulated account is thrown away: no shutdown of the server's threads, no
    # teardown of moto's backends (a second or more of garbage collection at exit).
    os._exit(0)


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1]), sys.argv[2:]))
