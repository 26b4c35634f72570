"""`quality.py` with another smallest crop for colour views: does the augmentations' strength
matter within the 10-epoch budget? The colour policy's crop area is drawn from (LOW, 1) instead
of (0.2, 1); everything else is `quality.py` as given after LOW.

    python benchmarks/crop_scale.py 0.08 --datasets cifake --seeds 0 --methods aegmm \\
        --no-default --variant epochs=10 --out /tmp/exp/crop008

The same as `view_policy.py crop_scale=LOW:1`, kept because `results/crop_scale/` names this command.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import view_policy  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        raise SystemExit("usage: crop_scale.py LOW [quality.py options, without --cache]")
    return view_policy.main([f"crop_scale={float(argv[0])}:1", *argv[1:]])


if __name__ == "__main__":
    raise SystemExit(main())
