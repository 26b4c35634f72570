"""`quality.py` with other contrastive settings than the library's (`aegmm.contrastive.
ContrastiveConfig`), such as the projection head's size (issue 13). CHANGES are its fields,
comma-separated; everything after them is `quality.py` as given.

    python benchmarks/contrastive_options.py hidden_dim=512,projection_dim=128 --datasets cifake \\
        --tasks cifar10 --seeds 0 --methods aegmm --no-default --variant epochs=auto --out /tmp/exp/head512

The settings a run already takes from `--variant` (objective, temperature, view_size) are not
CHANGES. The patch wraps `aegmm.contrastive.train_contrastive` for this process only, so it reaches
contrastive and hybrid runs; quality.md records the command without CHANGES, and the NOTES beside
committed results give them. No `--cache`: its key does not know the patch.
"""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aegmm.contrastive as contrastive  # noqa: E402
import quality  # noqa: E402
from common import field_changes  # noqa: E402

USAGE = "usage: contrastive_options.py FIELD=VALUE[,FIELD=VALUE...] [quality.py options, without --cache]"
FROM_VARIANTS = ("mode", "temperature", "view_size", "policy")  # set per run by the library


def parse_changes(text: str) -> dict:
    """'hidden_dim=512,schedule=constant' -> {'hidden_dim': 512, 'schedule': 'constant'}."""
    known = {f.name: f.default for f in fields(contrastive.ContrastiveConfig) if f.name not in FROM_VARIANTS}
    return field_changes(text, known, USAGE)


def patch(changes: dict) -> None:
    """Every later `train_contrastive` call trains with `changes` on top of its options."""
    original = contrastive.train_contrastive

    def patched(*args, **options):
        return original(*args, **(options | changes))

    contrastive.train_contrastive = patched


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or "--cache" in argv:
        raise SystemExit(USAGE)
    changes = parse_changes(argv[0])
    patch(changes)
    print(f"contrastive settings changed: {changes}", flush=True)
    return quality.main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
