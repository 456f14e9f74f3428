"""One botocore data loader for every botocore session a test makes (an autouse fixture).

Why: ``mock_aws`` sets boto3's default session to None each time it starts, so a test's
first ``boto3.client(...)`` of each service makes a new session, whose new loader reads
and decodes that service's JSON model from disk again: 70-290 ms of CPU per service and
test (sagemaker, ec2 and kms the most; 22 of the 100 profiled CPU-s of
test_aws_s3_sagemaker.py were ``json.loads`` of models). The models are immutable package
data, and the product already shares one loader across its own sessions
(``clampdown_aws.base``), so sharing one here removes test set-up only: every client
still gets its own session, credentials, endpoint and event hooks, and every call still
goes to moto. A session configured with its own ``data_path`` keeps its own loader.

A test module uses it by importing the fixture::

    from tests.integration.shared_models import shared_service_models  # noqa: F401
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

_lock = threading.Lock()
_shared: dict[str, Any] = {}


class _UniquePaths(list[str]):
    """Search paths that ignore a path already there: every boto3 session appends its own
    data folder to its loader's paths, which would grow the shared list by one a session."""

    def append(self, item: str) -> None:
        if item not in self:
            super().append(item)


def _loader() -> Any:
    """The process's one default-path loader (its cache holds the decoded models)."""
    with _lock:
        if "loader" not in _shared:
            from botocore.loaders import create_loader

            made = create_loader()
            made._search_paths = _UniquePaths(made.search_paths)
            _shared["loader"] = made
        return _shared["loader"]


@pytest.fixture(autouse=True)
def shared_service_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions made during the test use the shared loader (unless given a data_path)."""
    from botocore import session
    from botocore.loaders import create_loader

    def register(self: Any) -> None:
        def make() -> Any:
            data_path = self.get_config_variable("data_path")
            return create_loader(data_path) if data_path else _loader()

        self._components.lazy_register_component("data_loader", make)

    monkeypatch.setattr(session.Session, "_register_data_loader", register)
