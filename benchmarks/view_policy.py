"""`quality.py` with other colour views: do the augmentations' strengths matter within the 10-epoch
budget? CHANGES are `aegmm.augment.AugmentPolicy` fields for the colour policy, comma-separated;
a pair is written lo:hi. Everything after CHANGES is `quality.py` as given.

    python benchmarks/view_policy.py hue=0.1 --datasets cifake --seeds 0 --methods aegmm \\
        --no-default --variant epochs=10 --out /tmp/exp/hue01
    python benchmarks/view_policy.py crop_scale=0.35:1,brightness=0.8 ...

quality.md records the command without CHANGES; the NOTES beside committed results give it. No
`--cache`: its key does not know the policy, so a cached encoder of the default would be reused.
The policy is swapped by replacing the module's COLOUR, which `default_policy` reads per call.
"""

from __future__ import annotations

import sys
from dataclasses import fields, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aegmm.augment as augment  # noqa: E402
import quality  # noqa: E402
from common import field_changes  # noqa: E402

USAGE = "usage: view_policy.py FIELD=VALUE[,FIELD=VALUE...] [quality.py options, without --cache]"


def parse_changes(text: str) -> dict:
    """'hue=0.1,crop_scale=0.35:1' -> {'hue': 0.1, 'crop_scale': (0.35, 1.0)}; flip takes true/false."""
    return field_changes(text, {f.name: f.default for f in fields(augment.AugmentPolicy)}, USAGE)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or "--cache" in argv:
        raise SystemExit(USAGE)
    changes, rest = parse_changes(argv[0]), argv[1:]
    augment.COLOUR = replace(augment.COLOUR, **changes)
    print(f"colour views: {augment.COLOUR}", flush=True)
    return quality.main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
