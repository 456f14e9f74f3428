"""Diagnostics: one shape for every problem clampdown reports about a file.

Every message a runbook author sees reads ``path:line:col: what is wrong — how to
fix it``, so editors and CI annotate the exact spot. Loader, lint and input
validation all produce :class:`Diagnostic` values instead of raising ad-hoc
exceptions, which lets lint report every problem at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem, anchored to a place in a file."""

    path: str
    line: int
    column: int
    message: str
    hint: str = ""
    code: str = "invalid"
    severity: Severity = "error"

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}:{self.column}"
        text = f"{where}: {self.severity}: {self.message}"
        return f"{text} — {self.hint}" if self.hint else text

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class ClampdownError(Exception):
    """An error a user can fix; the CLI prints it without a traceback."""

    exit_code = 1
    retry_may_help = True
    """False when the same call would be refused the same way (a refusal by rule, not by the
    moment): a step failing with it is not tried again, whatever its retries say."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message


class InvalidFileError(ClampdownError):
    """A file could not be loaded; carries every diagnostic found."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))

    def __str__(self) -> str:
        return self.message


class InputError(ClampdownError):
    """Runbook inputs given at run time are missing or invalid."""

    exit_code = 2


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A ``did you mean 'x'?`` suffix, or an empty string when nothing is close.

    difflib is imported here, not at the top: a lint of correct files never suggests a
    name and need not pay for the import (issue 15's lint figure)."""
    import difflib

    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{match[0]}'?" if match else ""


def hint_or(word: str, choices: Iterable[str], fallback: str) -> str:
    """Prefer a did-you-mean; otherwise give the fallback advice."""
    return did_you_mean(word, choices) or fallback
