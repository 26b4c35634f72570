"""Write the CIFAKE benchmark split as two .npz files that `aegmm fit / assign / evaluate` read.

    python benchmarks/cifake_split.py --out /tmp/cifake     # fit.npz (16,000) and heldout.npz (4,000)
    python benchmarks/cifake_split.py --smoke --out DIR     # does it run? 200 / 100 of the decoded subset

The split is `common.split_cifake` (stratified by REAL/FAKE x CIFAR class, random_state=--seed),
the one `quality.py` scores on. Each file holds `images` (uint8 N x 32 x 32 x 3), `labels` (0 REAL,
1 FAKE), `label_names` and `cifar_class`; `benchmarks/results/cifake_pipeline.md` ran the CLI on them.
A smoke run writes to a temporary folder unless --out is given, and never into benchmarks/results.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from common import (
    CIFAKE_SUBSET,
    CIFAKE_ZIP,
    DOMAIN_NAMES,
    Labelled,
    load_cifake,
    load_cifake_subset,
    output_folder,
    split_cifake,
    stratified_subset,
)

SMOKE = {"fit_size": 200, "test_size": 100}


def save(data: Labelled, path: Path) -> None:
    np.savez_compressed(
        path,
        images=data.images,
        labels=data.domains,
        label_names=np.array(DOMAIN_NAMES),
        cifar_class=data.classes,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=None, help="folder for fit.npz and heldout.npz")
    parser.add_argument("--seed", type=int, default=0, help="random_state of the split")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="split cifake_train_subset.npz instead of the zip and keep 200 fit / 100 held-out images",
    )
    args = parser.parse_args(argv)
    if args.out is None and not args.smoke:
        parser.error("--out is required (the split files are inputs, not results)")
    try:
        out = output_folder(args.out, args.smoke)
    except ValueError as exc:
        parser.error(str(exc))
    everything = load_cifake_subset(CIFAKE_SUBSET) if args.smoke else load_cifake(CIFAKE_ZIP)
    fit, held_out = split_cifake(everything, test_size=4000, seed=args.seed)
    if args.smoke:
        fit = stratified_subset(fit, SMOKE["fit_size"], seed=args.seed)
        held_out = stratified_subset(held_out, SMOKE["test_size"], seed=args.seed)
    out.mkdir(parents=True, exist_ok=True)
    save(fit, out / "fit.npz")
    save(held_out, out / "heldout.npz")
    summary = {
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "source": (CIFAKE_SUBSET if args.smoke else CIFAKE_ZIP).name,
        "fit": {"images": len(fit.images), "fake": int(fit.domains.sum())},
        "heldout": {"images": len(held_out.images), "fake": int(held_out.domains.sum())},
    }
    (out / "split.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
