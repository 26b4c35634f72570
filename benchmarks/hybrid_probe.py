"""`quality.py` with the hybrid objective's reconstruction reaching the encoder: do NT-Xent's
invariances and the autoencoder's detail, learnt together, mend the digits' merged partition?
(issue 13)

    python benchmarks/hybrid_probe.py 1.0 --datasets digits --seeds 1,3,4 --methods aegmm \\
        --no-default --variant objective=hybrid --variant objective=hybrid,features=bottleneck \\
        --out /tmp/exp/hybrid_shared

WEIGHT: the hybrid objective trains with `shared_gradients=True` (the decoder's MSE on the views
reaches the encoder, instead of a decoder on the detached features) and `reconstruction_weight`
WEIGHT next to NT-Xent (`aegmm.contrastive.ContrastiveConfig`). Only runs whose objective is
hybrid change; their views follow the usual policy (GRAYSCALE for digits: no flips, crops of
60-100%, rotations up to 15 degrees).

The patch wraps `aegmm.contrastive.train_contrastive` for this process only; quality.md records
the command without WEIGHT, and the NOTES beside committed results give it. No `--cache`: its key
does not know the patch.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aegmm.contrastive as contrastive  # noqa: E402
import quality  # noqa: E402
from common import number_argument  # noqa: E402

USAGE = "usage: hybrid_probe.py WEIGHT [quality.py options, without --cache]"


def patch_shared(weight: float) -> None:
    original = contrastive.train_contrastive

    def patched(*args, **options):
        if options.get("mode") == "hybrid":
            options |= {"shared_gradients": True, "reconstruction_weight": weight}
        return original(*args, **options)

    contrastive.train_contrastive = patched


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or "--cache" in argv:
        raise SystemExit(USAGE)
    weight = number_argument(argv[0], USAGE, "WEIGHT, a number > 0", lambda w: w > 0)
    patch_shared(weight)
    print(f"hybrid with shared gradients, reconstruction weight {weight}", flush=True)
    return quality.main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
