"""Every input the event-decoding fuzzer keeps, run through the same checks without the fuzzer: the seed
corpus, and each crash it found once fixed (``tests/fuzz/``). CI also runs the fuzzer itself for a minute
(``make fuzz FUZZ_SECONDS=60``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.decoding import check

FUZZ = Path(__file__).parent / "fuzz"
INPUTS = sorted([*FUZZ.glob("corpus/*"), *FUZZ.glob("crashes/*")])


def test_there_is_a_seed_for_each_decoder() -> None:
    assert {path.read_bytes()[0] % 3 for path in FUZZ.glob("corpus/*")} == {0, 1, 2}


@pytest.mark.parametrize("path", INPUTS, ids=[f"{path.parent.name}/{path.name[:12]}" for path in INPUTS])
def test_each_saved_input_decodes_or_is_refused_with_a_reason(path: Path) -> None:
    check(path.read_bytes())
