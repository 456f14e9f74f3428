"""Forensics: what a suspect took, read from the account's logs after containment.

``aws.forensics.scope_exfiltration`` (:class:`ScopeExfiltration`) scopes S3 reads from
CloudTrail's files with an embedded columnar engine (DuckDB) or Athena, and S3 server access
logs where configured; see docs/scoping.md.
"""

from clampdown_aws.forensics.exfiltration import ScopeExfiltration
from clampdown_aws.forensics.inference import ScopeInferenceExtraction

__all__ = ["ScopeExfiltration", "ScopeInferenceExtraction"]
