"""Imported by the drill processes' forkserver (tests/e2e/drill_pool.py), once: what a drill
imports on its way (serve's Slack app, the scope's duckdb, every action module, the report's
graphviz) and botocore's models of the drills' services, read into the loader clampdown_aws
shares. Each drill process, a fork of the forkserver, starts with all of it instead of
paying it again (measured: the first drill of a process ~0.8 CPU-s more than the next).
Nothing here starts a thread or opens a connection (a fork keeps only the forking thread).
"""

from __future__ import annotations

import contextlib
import importlib

import boto3

from clampdown.core.actions import registry
from clampdown_aws.base import _with_shared_models

MODULES = (
    "clampdown_aws.testing.simulated",
    "clampdown_aws.testing.seed",
    "clampdown_slack.testing.standin",
    "clampdown_flows.decisions",
    "clampdown_flows.triage",
    "slack_bolt",
    "duckdb",
    "graphviz",
    "websockets",
)
# seed_services, the runbooks' steps and the drills' checks
SERVICES = (
    "s3",
    "iam",
    "sts",
    "sagemaker",
    "kms",
    "secretsmanager",
    "cloudtrail",
    "logs",
    "cloudwatch",
    "apigateway",
)


def warm() -> None:
    for name in MODULES:
        with contextlib.suppress(ImportError):  # an optional one not installed: imported later
            importlib.import_module(name)
    registry().load_all()  # every action module, as the runs load theirs
    made = _with_shared_models(
        boto3.session.Session(
            region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        )
    )
    for service in SERVICES:
        with contextlib.suppress(Exception):  # a service botocore does not know: none read
            made.client(service)


warm()
