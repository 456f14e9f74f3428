"""The registry that lets a decision sent in the run's own process wake its paused wait.

Only the registry here (no Prefect): a bell is rung from another thread onto the waiting
loop, nothing is rung for a flow run nobody waits on, a finished wait forgets its bell,
and the flows of a runner find its registry in their context. The wake-up of a real
paused run: tests/integration/test_approval_wakeup.py.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading

from clampdown_flows.decision_wakeup import Wakeups, current

RUN = "3f1c2a9e-0000-4000-8000-000000000001"


def test_a_bell_rung_from_another_thread_wakes_the_waiting_loop() -> None:
    wakeups = Wakeups()
    rung_back: list[bool] = []

    async def wait() -> bool:
        with wakeups.listening(RUN) as bell:
            sender = threading.Thread(target=lambda: rung_back.append(wakeups.wake(RUN)))
            sender.start()
            # no deadline to race: the wait ends only when the bell rings (or hangs the test)
            await bell.wait()
            sender.join()
            return bell.is_set()

    assert asyncio.run(wait()) is True
    assert rung_back == [True] and wakeups.rung == 1


def test_nothing_is_rung_for_a_run_nobody_waits_on_here() -> None:
    wakeups = Wakeups()
    assert wakeups.wake(RUN) is False  # never listened: the run's poll finds the decision

    async def listen_then_stop() -> None:
        with wakeups.listening(RUN):
            pass

    asyncio.run(listen_then_stop())
    assert wakeups.wake(RUN) is False  # the pause ended: its bell is gone
    assert wakeups.rung == 0


def test_a_newer_pause_keeps_its_bell_when_an_older_one_ends() -> None:
    wakeups = Wakeups()

    async def overlapping() -> tuple[bool, bool, bool]:
        older = wakeups.listening(RUN)
        old_bell = older.__enter__()
        with wakeups.listening(RUN) as new_bell:
            older.__exit__(None, None, None)  # the older wait ends after the newer began
            woke = wakeups.wake(RUN)
            await asyncio.sleep(0)  # let call_soon_threadsafe deliver it
            return woke, new_bell.is_set(), old_bell.is_set()

    assert asyncio.run(overlapping()) == (True, True, False)


def test_a_bell_whose_loop_is_closed_is_not_rung() -> None:
    wakeups = Wakeups()
    loop = asyncio.new_event_loop()
    listening = wakeups.listening(RUN)

    async def enter() -> None:
        listening.__enter__()

    loop.run_until_complete(enter())
    loop.close()
    assert wakeups.wake(RUN) is False


def test_flows_find_the_registry_of_whoever_runs_them_in_their_context() -> None:
    wakeups = Wakeups()
    assert current() is None
    with wakeups.serving():
        copied = contextvars.copy_context()  # what a runner hands each run's task
    assert current() is None
    assert copied.run(current) is wakeups
