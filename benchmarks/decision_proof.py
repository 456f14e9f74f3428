#!/usr/bin/env python3
"""What proving a decision costs: the run's check of each decision's proof, per source.

Prints p50/p95 (ms) of, measured in the same run on the same decision:

* **baseline** — the HMAC check of a Slack decision with the run's approval key (what
  every Slack and terminal decision cost before approvers signed with their own keys);
* **ssh verify** — ``ssh-keygen -Y verify`` of a terminal decision against an
  allowed-signers file of ``--signers`` keys (the run does it, in a thread, once per
  decision);
* **ssh sign** — ``ssh-keygen -Y sign`` with an unencrypted Ed25519 key (what
  ``clampdown approve`` adds before sending; serve pays it per Slack click when it has
  ``CLAMPDOWN_SERVE_KEY``).

    python benchmarks/decision_proof.py [--runs 50] [--signers 50]

A decision waits for a person for minutes; the target is that proving it stays well under
the 0.5 s a paused run takes to notice it (its poll interval).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from clampdown.core.approvals import Decision
from clampdown.core.decision_proof import Verifier
from clampdown.core.signatures import allowed_signers_line, generate_key, sign


def timed(runs: int, action: Callable[[], object]) -> tuple[float, float]:
    """p50 and p95 in milliseconds of ``runs`` calls of ``action``."""
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(0.95 * (len(samples) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--signers", type=int, default=50, help="keys in allowed_signers")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clampdown-bench-") as tmp:
        folder = Path(tmp)
        (folder / "home").mkdir()
        allowed = folder / "allowed_signers"
        lines = []
        for number in range(args.signers):
            key = generate_key(folder / f"k{number}", f"U0BENCH{number}")
            lines.append(allowed_signers_line(f"U0BENCH{number}", key))
        allowed.write_text("".join(lines))
        allowed.chmod(0o644)
        decision = Decision(
            run_id="a1b2c3d4e5f6",
            step="approve",
            params_hash="0" * 64,
            nonce="1" * 32,
            decision="approve",
            approver="U0BENCH0",
            source="terminal",
        )
        key = folder / "k0"
        signed = decision.model_copy(update={"signature": sign(decision.signing_payload(), key)})
        slack = decision.model_copy(update={"source": "slack"}).signed(b"k" * 32)
        verifier = Verifier(run_key=b"k" * 32, allowed_signers=allowed, home=folder / "home")
        assert verifier.check(signed).refusal is None and verifier.check(slack).refusal is None
        rows = [
            ("baseline: HMAC (run key)", timed(args.runs, lambda: verifier.check(slack))),
            (
                f"ssh verify ({args.signers} signers)",
                timed(args.runs, lambda: verifier.check(signed)),
            ),
            ("ssh sign (Ed25519)", timed(args.runs, lambda: sign(decision.signing_payload(), key))),
        ]
    print(f"decision proof, {args.runs} runs each (ms)")
    print(f"{'':32} {'p50':>8} {'p95':>8}")
    for name, (p50, p95) in rows:
        print(f"{name:32} {p50:8.2f} {p95:8.2f}")


if __name__ == "__main__":
    main()
