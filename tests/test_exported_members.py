"""Each package has a small, explicit public API: its ``__all__`` is sorted and every name exists."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = ["features", "streams", "online_store", "offline_store", "monitors", "sluice"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_importable(name: str) -> None:
    package = importlib.import_module(name)
    exported = package.__all__
    assert exported == sorted(exported)
    missing = [member for member in exported if not hasattr(package, member)]
    assert missing == []
