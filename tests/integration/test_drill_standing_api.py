"""A drill uses a standing drills' Prefect API only when it is one of its own home: the
URL published in the drills' Prefect home, on loopback, answering a request signed with
that home's secret. Anything else (no file, a dead port, another server, a URL off the
machine) and the drill starts a server of its own."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from clampdown.app.drill.world import API_FILE, _drills_settings, standing_api
from clampdown_flows.prefect_api import AUTH_FILE


class _Api(BaseHTTPRequestHandler):
    """Answers ``GET /api/admin/version`` 200 to the expected Basic auth, else 401."""

    expected = ""
    slow = 0  # requests still to answer late
    late = 0.0  # seconds

    def do_GET(self) -> None:
        if type(self).slow > 0:
            type(self).slow -= 1
            time.sleep(self.late)
        token = base64.b64encode(self.expected.encode()).decode()
        ok = self.path == "/api/admin/version" and (
            self.headers.get("Authorization") == f"Basic {token}"
        )
        try:
            self.send_response(200 if ok else 401)
            self.end_headers()
            self.wfile.write(b'"3.0.0"' if ok else b"{}")
        except (BrokenPipeError, ConnectionResetError):  # a late answer nobody waits for
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[str, type[_Api]]]:
    handler = type("Handler", (_Api,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api", handler
    finally:
        server.shutdown()
        server.server_close()


def _home(tmp_path: Path, url: object, secret: str | None = "clampdown:s3cret") -> Path:
    home = tmp_path / "drills" / "prefect"
    home.mkdir(parents=True)
    (home / API_FILE).write_text(json.dumps({"url": url}), encoding="utf-8")
    if secret is not None:
        (home / AUTH_FILE).write_text(secret + "\n", encoding="utf-8")
    return home


def _standing(home: Path) -> str | None:
    with _drills_settings(home):  # the home's secret is read from its Prefect home
        return standing_api(home)


def test_the_published_api_of_the_home_is_used(tmp_path: Path, api) -> None:
    url, handler = api
    handler.expected = "clampdown:s3cret"
    assert _standing(_home(tmp_path, url)) == url


def test_a_server_that_refuses_the_homes_secret_is_not_used(tmp_path: Path, api) -> None:
    url, handler = api
    handler.expected = "clampdown:another-homes-secret"
    assert _standing(_home(tmp_path, url)) is None


def test_no_secret_in_the_home_means_no_standing_api(tmp_path: Path, api) -> None:
    url, handler = api
    handler.expected = "clampdown:s3cret"
    assert _standing(_home(tmp_path, url, secret=None)) is None


def test_a_dead_port_a_url_off_loopback_or_a_bad_file_is_not_used(tmp_path: Path, api) -> None:
    url, handler = api
    handler.expected = "clampdown:s3cret"
    for number, published in enumerate(
        (
            "http://127.0.0.1:1/api",  # nothing listens there
            url.replace("127.0.0.1", "localhost"),  # answers, but not the published form
            ["not", "a", "url"],
        )
    ):
        assert _standing(_home(tmp_path / str(number), published)) is None, published
    broken = _home(tmp_path / "broken", url)
    (broken / API_FILE).write_text("{not json", encoding="utf-8")
    assert _standing(broken) is None
    assert _standing(tmp_path / "nothing-published") is None


def test_a_published_api_that_answers_slowly_is_asked_again_not_replaced(
    tmp_path: Path, api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a loaded machine the drills' API can take longer than one ask allows: it is asked
    again (a drill that gave up would start an API of its own, slower still); one that
    stays too slow for the whole patience is not used."""
    from clampdown.app.drill import world

    url, handler = api
    handler.expected = "clampdown:s3cret"
    monkeypatch.setattr(world, "STANDING_PROBE_TIMEOUT", 0.2)
    handler.slow, handler.late = 2, 0.6
    assert _standing(_home(tmp_path / "busy", url)) == url
    assert handler.slow == 0
    monkeypatch.setattr(world, "STANDING_PATIENCE", 0.5)
    handler.slow = 1000
    assert _standing(_home(tmp_path / "stuck", url)) is None
