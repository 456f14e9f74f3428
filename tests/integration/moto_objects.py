"""Many objects into moto's in-process S3 at once, for test worlds.

Through boto3, each ``put_object`` costs ~20 ms in ``mock_aws`` (signing, then moto
parsing the request back): a world of ~200 trail files spent 4 s there, as long as the
scope it was built for. Fixtures whose objects only have to *be there* hand them to the
S3 backend's own ``put_object``, which boto3's call ends in: the same keys, bodies, ETags,
sizes and storage class, read back through boto3 by the code under test. (What differs is
what boto3 adds on the way, a CRC32 checksum header, which the trail readers never ask for.)
"""

from __future__ import annotations

from collections.abc import Mapping

ACCOUNT = "123456789012"  # moto's default account, the one mock_aws's clients act as


def put_objects(bucket: str, objects: Mapping[str, bytes], account: str = ACCOUNT) -> None:
    """Store ``objects`` (key -> body) in ``bucket``, which must exist (created through boto3)."""
    from moto.s3.models import s3_backends

    backend = s3_backends[account]["aws"]
    for key, body in objects.items():
        backend.put_object(bucket, key, body)
