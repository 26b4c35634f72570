"""`quality.py` with the autoencoder reconstructing each clean image from a warped copy of it: does
invariance to small rotations and crops, learnt through reconstruction, mend the digits' merged
partition? (issue 13)

    python benchmarks/warp_probe.py 10 0.8 --datasets digits --seeds 1,3,4 --methods aegmm \\
        --out /tmp/exp/warp10

ROTATION CROP_LO: each training input is rotated by up to ROTATION degrees and cropped to an area
of CROP_LO-1 of the image (aspect 0.8-1.25, never mirrored), through the same affine matrices as
the contrastive views (`aegmm.augment.affine_matrices`); the loss still compares the output with
the unwarped image. Denoising (the `noise` setting) is added after the warp, as without it. Pixels
the warp brings in from outside the image repeat its border (the digits' background). Validation
and encoding read unwarped images.

The patch replaces `aegmm.train._augment` for this process only; quality.md records the command
without the probe's own arguments, and the NOTES beside committed results give them. No
`--cache`: its key does not know the patch.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aegmm.train as train  # noqa: E402
import quality  # noqa: E402
from aegmm.augment import GRAYSCALE, AugmentPolicy, affine_matrices  # noqa: E402

USAGE = "usage: warp_probe.py ROTATION CROP_LO [quality.py options, without --cache]"


def warp_policy(rotation: float, crop_lo: float) -> AugmentPolicy:
    """The digits' view policy (no mirror, no colour, aspect 0.8-1.25) with rotations up to
    `rotation` degrees and crops of area crop_lo-1."""
    return replace(GRAYSCALE, crop_scale=(crop_lo, 1.0), rotation=rotation)


def warp(x: Tensor, policy: AugmentPolicy, generator: torch.Generator) -> Tensor:
    """One random warp of each normalised image in (B, C, H, W), border pixels repeated outside."""
    theta = affine_matrices(len(x), policy, generator).to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def patch_warp(rotation: float, crop_lo: float) -> None:
    policy, original = warp_policy(rotation, crop_lo), train._augment

    def patched(x: Tensor, config, generator: torch.Generator) -> Tensor:
        return original(warp(x, policy, generator), config, generator)

    train._augment = patched


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or "--cache" in argv:
        raise SystemExit(USAGE)
    try:
        rotation, crop_lo, rest = float(argv[0]), float(argv[1]), argv[2:]
        warp_policy(rotation, crop_lo)  # the policy's own checks: rotation 0-180, 0 < CROP_LO <= 1
    except (IndexError, ValueError) as error:
        wanted = "expected ROTATION (degrees) and CROP_LO (0-1]"
        raise SystemExit(f"{USAGE}\n{wanted}, got {argv[:2]}: {error}") from None
    patch_warp(rotation, crop_lo)
    print(f"warped reconstruction inputs: rotation {rotation} degrees, crop area {crop_lo}-1", flush=True)
    return quality.main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
