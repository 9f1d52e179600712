"""The local stack's S3 server (moto) as the tests reach it: its endpoint, credentials, and a plain S3
REST client (``urllib``, no pyarrow) to read back what sluice wrote. The ``bucket`` fixture is in
``conftest``."""

from __future__ import annotations

import os
import urllib.request
import xml.etree.ElementTree as ElementTree

from sluice.stack.services import DEFAULT_S3_ENDPOINT

ENDPOINT = os.environ.get("SLUICE_S3_ENDPOINT", DEFAULT_S3_ENDPOINT)
# moto takes any credentials; set them so that no SDK goes looking for an instance role.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "sluice-test",
    "AWS_SECRET_ACCESS_KEY": "sluice-test",
    "AWS_REGION": "us-east-1",
}


def s3_keys(bucket: str, prefix: str) -> list[str]:
    """The bucket's object keys under a prefix, from S3's ListObjectsV2 over plain HTTP."""
    keys: list[str] = []
    token = ""
    while True:
        query = f"list-type=2&prefix={prefix}" + (f"&continuation-token={token}" if token else "")
        with urllib.request.urlopen(f"{ENDPOINT}/{bucket}?{query}", timeout=10) as response:
            root = ElementTree.fromstring(response.read())
        space = {"s3": root.tag.split("}")[0].strip("{")}
        keys += [node.text or "" for node in root.findall("s3:Contents/s3:Key", space)]
        token = root.findtext("s3:NextContinuationToken", default="", namespaces=space)
        if not token:
            return keys


def s3_object(bucket: str, key: str) -> bytes:
    with urllib.request.urlopen(f"{ENDPOINT}/{bucket}/{key}", timeout=10) as response:
        return bytes(response.read())
