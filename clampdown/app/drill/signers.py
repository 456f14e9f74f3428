"""The drill's people sign terminal decisions as real approvers do: with SSH keys of their own.

A decision that goes through ``clampdown approve``'s path (no card reached Slack, e.g.
the slack-outage drill) must be signed by a key that ``CLAMPDOWN_ALLOWED_SIGNERS`` lists
for the approver id, and that file must lie outside ``CLAMPDOWN_HOME`` (the drill
workspace). So each drill makes a fresh Ed25519 key per person (per Slack user id of its
roles) in a private temporary folder of its own, never in the workspace, lists them in
an allowed-signers file there, and removes the folder, private keys included, when the
drill ends: nothing the drill leaves behind can sign anything.

Slack clicks in the drill are vouched for by ``clampdown serve`` as in production (the
run's approval key): the file lists no ``clampdown-serve`` key.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from clampdown.core.drill_model import Drill
from clampdown.core.home import PRIVATE_FILE
from clampdown.core.signatures import allowed_signers_line, generate_key

ALLOWED_SIGNERS = "allowed_signers"


@dataclass(frozen=True)
class DrillSigners:
    """Each drill person's private key (by Slack user id) and the file that lists them."""

    allowed_signers: Path
    keys: dict[str, Path]

    def key_for(self, approver: str) -> Path | None:
        """The private key ``approver`` signs with (None: nobody in the drill has that id)."""
        return self.keys.get(approver)


def _people(drill: Drill) -> list[str]:
    """Every Slack user id of the drill's roles, once each, in the roles' order."""
    ids: list[str] = []
    for role in drill.roles.names():
        person = drill.roles.get(role)
        if person is not None and person.slack_user not in ids:
            ids.append(person.slack_user)
    return ids


@contextlib.contextmanager
def drill_signers(drill: Drill) -> Iterator[DrillSigners]:
    """Fresh keys for the drill's people in a 0700 temporary folder, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="clampdown-drill-signers-") as tmp:
        folder = Path(tmp)  # mkdtemp: 0700, outside any CLAMPDOWN_HOME
        keys = {user: generate_key(folder / user, user) for user in _people(drill)}
        allowed = folder / ALLOWED_SIGNERS
        fd = os.open(allowed, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.writelines(allowed_signers_line(user, key) for user, key in keys.items())
        yield DrillSigners(allowed_signers=allowed, keys=keys)
