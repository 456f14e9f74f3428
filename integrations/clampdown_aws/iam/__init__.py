"""IAM containment: revoke a principal's credentials, rotate a service user's access key.

``aws.iam.revoke_credentials`` cuts an IAM user or role off: for a user it attaches
a deny-all quarantine policy, deactivates (never deletes) every active access key
and deletes the console login profile; for a role it revokes every session issued
before now (the ``aws:TokenIssueTime`` deny pattern of the IAM console's "Revoke
active sessions") and, on request, denies ``sts:AssumeRole*`` in the trust policy.

``aws.iam.block_assume_role`` denies assuming a role, to everyone or to listed principals.

``aws.iam.rotate_access_key`` creates a new access key for a service user, stores it
in Secrets Manager, then deactivates the old key(s).

Both also ``describe`` (for ``clampdown plan --live``) what they would change now, with
the same read helpers ``apply`` uses and read-only calls only.

Both record one undo record per change they actually make (nothing when the state
is already as wanted) and never write a secret (secret access key, password) to a
log, an output or an undo record. botocore itself writes request and response
bodies at DEBUG level; :mod:`clampdown_aws.base` scrubs those records.
"""

from clampdown_aws.iam._common import (
    BLOCK_SID,
    QUARANTINE_SID,
    REVOKE_POLICY,
    parse_principal_arn,
)
from clampdown_aws.iam.block_assume import BlockAssumeRole
from clampdown_aws.iam.revoke import (
    RevokeCredentials,
    block_assume_statement,
    quarantine_document,
    revoke_sessions_document,
)
from clampdown_aws.iam.rotate import RotateAccessKey

__all__ = [
    "BLOCK_SID",
    "QUARANTINE_SID",
    "REVOKE_POLICY",
    "BlockAssumeRole",
    "RevokeCredentials",
    "RotateAccessKey",
    "block_assume_statement",
    "parse_principal_arn",
    "quarantine_document",
    "revoke_sessions_document",
]
