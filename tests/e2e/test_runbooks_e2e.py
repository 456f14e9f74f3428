"""AWS actions inside a run from the CLI against moto server: errors named in the ledger.

The shipped runbooks, approvals included, run end to end in tests/test_runbook_library.py.
"""

from __future__ import annotations

import boto3
import pytest
from typer.testing import CliRunner

from clampdown.app.cli import app
from clampdown.core.ledger import read
from clampdown.core.settings import settings

pytestmark = pytest.mark.usefixtures("prefect_server")
runner = CliRunner()
USER = "arn:aws:iam::123456789012:user/mallory"


def run_id_of(output: str) -> str:
    return output.split("ledger: ")[1].split()[0].split("/")[-2]


def key_statuses(iam) -> list[str]:
    return [k["Status"] for k in iam.list_access_keys(UserName="mallory")["AccessKeyMetadata"]]


def test_access_denied_is_named_in_the_ledger_and_continue_lets_the_rest_run(
    aws_endpoint, write_runbook, monkeypatch
):
    from botocore.client import BaseClient
    from botocore.exceptions import ClientError

    real_call = BaseClient._make_api_call

    def deny_update_access_key(self, operation_name, api_params):
        if operation_name == "UpdateAccessKey":
            raise ClientError(
                {
                    "Error": {
                        "Code": "AccessDenied",
                        "Message": (
                            "User: arn:aws:iam::123456789012:role/clampdown-engine is not authorized to "
                            "perform: iam:UpdateAccessKey on resource: user mallory"
                        ),
                    }
                },
                operation_name,
            )
        return real_call(self, operation_name, api_params)

    monkeypatch.setattr(BaseClient, "_make_api_call", deny_update_access_key)
    iam = boto3.client("iam", region_name="us-east-1")
    iam.create_user(UserName="mallory")
    iam.create_access_key(UserName="mallory")
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="models")
    path = write_runbook(f"""apiVersion: clampdown/v1
kind: Runbook
metadata: {{name: partial, title: Partial containment}}
steps:
  - id: revoke
    uses: aws.iam.revoke_credentials
    on_failure: continue
    preapproved: test runbook, no human in the loop here
    with: {{principal_arn: "{USER}"}}
  - id: lock
    uses: aws.s3.lock_model_artifacts
    preapproved: test runbook, no human in the loop here
    with: {{bucket: models, prefix: models/, allow_principals: ["arn:aws:iam::123456789012:role/serving"]}}
""")
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    ledger = read(settings().ledger_path(run_id_of(result.output)))
    ends = {r["step"]: r for r in ledger if r["type"] == "step.end"}
    assert ends["lock"]["status"] == "succeeded"
    assert ends["revoke"]["status"] == "failed"
    assert ends["revoke"]["error"].startswith(
        "AwsAccessDenied: AccessDenied: arn:aws:iam::123456789012:role/clampdown-engine may not "
        "call iam:UpdateAccessKey"
    )
    assert "iam:UpdateAccessKey" in result.output
