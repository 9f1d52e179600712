"""Progress of the long commands (``verify``, ``materialize``, ``backfill``, ``profile``): a bar on
standard error when it is a terminal, and nothing at all when it is a pipe or a file, so that scripts and
CI logs get only the commands' results.

>>> import io
>>> with Progress("verifying card_stats", stream=io.StringIO()) as bar:  # not a terminal: silent
...     bar(500, 1000)
...     bar.done
500
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import IO, Any

__all__ = ["Progress"]


class Progress:
    """A callable ``(done, total)`` that draws a tqdm bar on a terminal."""

    def __init__(self, what: str, *, unit: str = "rows", stream: IO[str] | None = None) -> None:
        self.what = what
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self._bar: Any = None

    def __enter__(self) -> Progress:
        if self.stream.isatty():
            from tqdm import tqdm  # type: ignore[import-untyped]

            self._bar = tqdm(desc=self.what, unit=self.unit, unit_scale=True, file=self.stream, leave=True)
        return self

    def __call__(self, done: int, total: int) -> None:
        self.done = done
        if self._bar is not None:
            self._bar.total = total
            self._bar.n = done
            self._bar.refresh()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.close()
