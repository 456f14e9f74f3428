"""moto's KMS without an RSA key generated for every symmetric key (an autouse fixture).

Why: moto makes an RSA-2048 private key for every KMS key it creates, symmetric ones
included (``moto.kms.models.Key.__init__`` calls ``generate_private_key`` whatever the key
spec; a symmetric key gets RSA-2048): 40 ms of CPU on an idle core, several times that on
a loaded machine, per CreateKey. moto uses that key only to sign, verify and give the
public key, operations AWS refuses for symmetric keys, and the tests using this fixture
make symmetric keys that do none of them. So every symmetric key (``SYMMETRIC_DEFAULT``,
the default, and the HMAC specs) gets one RSA key made once per process; asymmetric key
specs still get a key pair of their own, made by moto as before. Everything else about a
key (its id, material, state, policy, rotations) is moto's own. The in-process mock and
the moto server of the tests run in this process, so both see it.

A test module uses it by importing the fixture::

    from tests.integration.moto_kms_keys import one_rsa_key_for_symmetric_keys  # noqa: F401 - autouse
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

_lock = threading.Lock()
_made: dict[str, Any] = {}  # the one private key symmetric keys share, once made


def _symmetric(key_spec: str) -> bool:
    return key_spec == "SYMMETRIC_DEFAULT" or key_spec.startswith("HMAC_")


@pytest.fixture(autouse=True)
def one_rsa_key_for_symmetric_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """KMS keys moto creates during the test: symmetric ones share one RSA key."""
    from moto.kms import models

    real = models.generate_private_key

    def generate_private_key(key_spec: str) -> Any:
        if not _symmetric(key_spec):
            return real(key_spec)
        with _lock:
            if "symmetric" not in _made:
                _made["symmetric"] = real(key_spec)
            return _made["symmetric"]

    monkeypatch.setattr(models, "generate_private_key", generate_private_key)
