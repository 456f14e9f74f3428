"""The engine: runs a runbook's steps by its rules, knowing no Prefect and no provider.

* :mod:`.state` — what a run knows (:class:`RunState`, :class:`StepResult`);
* :mod:`.scheduler` — the step-running rules, over a :class:`StepRunner`;
* :mod:`.gate_policy` — what an approval gates and what its outcome lets run;
* :mod:`.observing` — the run's observers (:mod:`clampdown.core.extensions`) as one;
* :mod:`.evidence` — the finished ledger to the evidence sinks.

The Prefect flow :mod:`clampdown_flows.respond` is one adapter: it runs each action
step as a Prefect task and pauses the flow run for approvals.
"""
