"""The atheris fuzz target of event decoding (stream events, CloudEvents, KServe logger events); what it
checks is in ``decoding.py``.

    make fuzz                        # 5 minutes over tests/fuzz/corpus (FUZZ_SECONDS=...)
    .venv/bin/python tests/fuzz/fuzz_decoding.py tests/fuzz/corpus -max_total_time=60

A crash is written to ``crash-<sha1>`` (``make fuzz``: under ``.sluice/fuzz/``): once fixed, move it to
``tests/fuzz/crashes/``, and ``tests/test_fuzz_regressions.py`` runs it from then on.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> None:
    import atheris

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo, for tests.fuzz

    with atheris.instrument_imports(include=["streams", "monitors", "tests"]):
        from tests.fuzz.decoding import check

    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
