"""A run's boto3 clients: made once, shared by the run's steps, released when the run ends.

Why: making a boto3 client costs 10-30 ms of CPU and about half a megabyte of short-lived
objects (a session, its event handlers, the client's endpoint rules); a run asked for one at
every AWS call site of every step. With 32 incidents at once in one ``serve`` that is CPU
taken from containment, and garbage whose full collections delay the next alert's answer.

What is kept, and for whom (the security of the product rests on these keys):

* per run: a run's clients are never handed to another run, whatever else matches, so one
  run's assumed-role credentials never serve another (their STS session name carries the
  run id for CloudTrail, too). A run is its ``CLAMPDOWN_HOME`` and its id: a run id is unique
  within a home, not across homes (tests give every run the same id in homes of their own);
* per what decides a client's credentials and behaviour: the assumed role (``account:``),
  the region, the service, read-only or not (a preview's client refuses mutating calls; it
  is never handed to a step that changes something, nor the other way round), and a digest
  of the process's ``AWS_*`` variables (endpoint URLs, credentials, ``AWS_MAX_ATTEMPTS``):
  a changed variable makes new clients, as a new process would;
* per credential set: a client made with assumed-role credentials is kept only as long as
  those credentials are the ones the run holds (their expiry is the ``version``); when they
  are renewed (five minutes before they expire) the next call gets a client made with the
  new ones, and the old one is dropped.

The run's clients are made from one boto3 session per (role, region, credential set), under
the run's lock: botocore clients are thread-safe, making them from one session is not.

Released when the run ends in this process (``AwsAction.release_run``, called by the respond
flow at its end); a release that never comes (a run whose process dies, a rollback, ``plan``)
costs memory only up to :data:`MAX_RUNS` runs: the least recently used run's clients are
then dropped (a step still holding one keeps using it; the next call makes a new one).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

MAX_RUNS = 64  # serve's bursts run 32 at once; beyond this, the least recently used go
T = TypeVar("T")


@dataclass
class _Kept:
    """One run's clients (and sessions), each with the credential version it was made with."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    made: dict[Hashable, tuple[Hashable, Any]] = field(default_factory=dict)


class RunClients:
    """The clients of the runs of this process, each run's apart (a bounded LRU of runs)."""

    def __init__(self, max_runs: int = MAX_RUNS) -> None:
        self.max_runs = max_runs
        self._runs: OrderedDict[tuple[str, str], _Kept] = OrderedDict()
        self._lock = threading.Lock()

    def get(
        self, run: tuple[str, str], key: Hashable, version: Hashable, make: Callable[[], T]
    ) -> T:
        """Run ``run``'s (its home, its id) object for ``key`` made with credential
        ``version``, made now if none is.

        ``make`` runs under the run's lock (re-entrant: making a client may get the run's
        session through here), so two steps of one run asking at once make it once.
        An object kept with another version (credentials since renewed) is replaced.
        """
        kept = self._kept(run)
        with kept.lock:
            found = kept.made.get(key)
            if found is not None and found[0] == version:
                return found[1]  # type: ignore[no-any-return]
            made = make()
            kept.made[key] = (version, made)
            return made

    def release(self, run_id: str) -> list[Any]:
        """Forget the clients and sessions of run ``run_id`` (in any home); returns them
        (the caller may close them)."""
        with self._lock:
            gone = [self._runs.pop(run) for run in list(self._runs) if run[1] == run_id]
        released: list[Any] = []
        for kept in gone:
            with kept.lock:
                released.extend(made for _, made in kept.made.values())
        return released

    def runs(self) -> list[tuple[str, str]]:
        """The runs whose clients are kept, least recently used first."""
        with self._lock:
            return list(self._runs)

    def clear(self) -> None:
        """Forget every run's clients (tests: a fixed run id must not carry across tests)."""
        with self._lock:
            self._runs.clear()

    def _kept(self, run: tuple[str, str]) -> _Kept:
        with self._lock:
            kept = self._runs.get(run)
            if kept is None:
                kept = self._runs[run] = _Kept()
                while len(self._runs) > self.max_runs:
                    self._runs.popitem(last=False)
            else:
                self._runs.move_to_end(run)
            return kept
