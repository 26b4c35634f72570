"""What aegmm tells a person while it works: progress bars and one-line steps, both on stderr.

Bars are drawn only when stderr is a terminal (tqdm's ``disable=None``), so a log file gets the
step lines and never a carriage-return stream; ``enabled=False`` (``--quiet``) silences both.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm.auto import tqdm


def bar(
    iterable: Iterable | None = None, *, enabled: bool, desc: str, total: int | None = None, unit: str = "it"
):
    """A tqdm bar on stderr: drawn on a terminal when enabled, never otherwise."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=None if enabled else True, leave=False)


def say(message: str, *, enabled: bool = True) -> None:
    """One line on stderr (flushed), unless silenced."""
    if enabled:
        print(message, file=sys.stderr, flush=True)
