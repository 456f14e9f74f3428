"""Approvers' own SSH keys for tests: ``ssh-keygen -t ed25519`` keys in a temporary folder
and an allowed-signers file (git's format) outside ``CLAMPDOWN_HOME`` naming them, set as
``CLAMPDOWN_ALLOWED_SIGNERS`` for the run that verifies terminal decisions."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from clampdown.core.signatures import allowed_signers_line, generate_key


@dataclass
class ApproverKeys:
    """Each approver id's private key, and the allowed-signers file that lists them."""

    folder: Path
    allowed_signers: Path
    keys: dict[str, Path] = field(default_factory=dict)

    def add(self, approver: str, *, listed: bool = True) -> Path:
        """Make a key for ``approver``; ``listed=False``: a key nobody put in the file."""
        path = generate_key(self.folder / approver, approver)
        self.keys[approver] = path
        if listed:
            self.list(approver, path)
        return path

    def list(self, principals: str, key: Path) -> None:
        """Add a line ``<principals> <public key>`` to the allowed-signers file."""
        with self.allowed_signers.open("a") as handle:
            handle.write(allowed_signers_line(principals, key))

    def __getitem__(self, approver: str) -> Path:
        return self.keys[approver]


def approver_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *approvers: str) -> ApproverKeys:
    """Keys for ``approvers``, listed in a 0644 allowed-signers file outside the home."""
    folder = tmp_path / "approver-keys"
    folder.mkdir()
    allowed = tmp_path / "etc-clampdown" / "allowed_signers"
    allowed.parent.mkdir()
    allowed.touch(mode=0o644)
    made = ApproverKeys(folder, allowed)
    for approver in approvers:
        made.add(approver)
    monkeypatch.setenv("CLAMPDOWN_ALLOWED_SIGNERS", str(allowed))
    return made
