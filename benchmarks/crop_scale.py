"""`quality.py` with another smallest crop for colour views: does the augmentations' strength
matter within the 10-epoch budget? The colour policy's crop area is drawn from (LOW, 1) instead
of (0.2, 1); everything else is `quality.py` as given after LOW.

    python benchmarks/crop_scale.py 0.08 --datasets cifake --seeds 0 --methods aegmm \\
        --no-default --variant epochs=10 --out /tmp/exp/crop008

quality.md records the command without LOW; the NOTES beside committed results give it. No
`--cache`: its key does not know the policy, so a cached encoder of the default would be reused.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aegmm.augment as augment  # noqa: E402
import quality  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or "--cache" in argv:
        raise SystemExit("usage: crop_scale.py LOW [quality.py options, without --cache]")
    low, rest = float(argv[0]), argv[1:]
    augment.COLOUR = replace(augment.COLOUR, crop_scale=(low, 1.0))  # default_policy reads it per call
    print(f"colour views: crop area in ({low}, 1)", flush=True)
    return quality.main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
