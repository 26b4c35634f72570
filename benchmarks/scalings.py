"""The mixture under normalize "both" against "l2" on two members' latents (issue 13).

    python benchmarks/scalings.py --latents DIR --name digits --out OUT/digits.jsonl [--tail]
    python benchmarks/scalings.py report --rows OUT/*.jsonl --out OUT     # OUT/scalings.md
    python benchmarks/scalings.py --smoke --out DIR                      # does it run?

For every pair of consecutive encoders s, s+1 in DIR (NAME_encoderS.npz as `candidate_choice.py
digits` / `mnist` / `mnist3k` write them, each one one-network run's latents), the two latents side
by side (what `--members 2` gives the mixture: member i of the run seeded s is the one-network run
seeded s + i, tests/test_ensemble.py), then aegmm's default mixture for them (UMAP, even under
1,000 images; 5 candidates; parts 2) with mixture seed s under each normalize setting: "both" (the
default) and "l2" (each member's vector to unit length: the default before). One JSON line per pair
and setting: held-out accuracy and NMI, the scaling kept, the seconds. With --tail, the long-tailed subsets of
`candidate_choice.py tail` (170 of one digit down to 30 of another, seed s) are fitted and scored.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from aegmm.config import MixtureConfig
from aegmm.mixture import LatentMixture
from common import agreement, machine, output_folder, tail_indices
from report import mean_sd

SETTINGS = ("both", "l2")


def pair_latents(folder: Path, name: str, seed: int, tail: bool) -> dict | None:
    """Encoders seed and seed + 1 side by side (fit, held_out and their labels), or None."""
    paths = [folder / f"{name}_encoder{s}.npz" for s in (seed, seed + 1)]
    if not all(p.is_file() for p in paths):
        return None
    members = [np.load(p) for p in paths]
    pair = {key: np.hstack([m[key] for m in members]) for key in ("fit", "held_out")}
    pair |= {key: members[0][key] for key in ("fit_labels", "held_out_labels")}
    if tail:  # the digits are fitted and scored alike: one subset of both
        keep = tail_indices(pair["fit_labels"], seed)
        pair = {key: value[keep] for key, value in pair.items()}
    return pair


def fit_rows(folder: Path, name: str, out: Path, tail: bool = False, n_jobs: int = 2, first: int = 0) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as lines:
        for seed in range(first, 100):
            pair = pair_latents(folder, name, seed, tail)
            if pair is None:
                break
            for normalize in SETTINGS:
                config = MixtureConfig(n_components=10, seed=seed, normalize=normalize, reducer="umap")
                config = config.resolve(channels=1, parts=2)  # the default under UMAP
                t0 = time.perf_counter()
                mixture = LatentMixture(config).fit(pair["fit"], n_jobs=n_jobs)
                seconds = time.perf_counter() - t0
                scores = agreement(pair["held_out_labels"], mixture.predict(pair["held_out"]))
                row = {"name": name + ("_tail" if tail else ""), "pair": seed, "normalize": normalize,
                       "acc": scores["acc"], "nmi": scores["nmi"], "scaling": mixture.scaling_,
                       "kept": mixture.kept_, "seconds": round(seconds, 1)}  # fmt: skip
                lines.write(json.dumps(row) + "\n")
                lines.flush()
                print(row, flush=True)


def report(paths: list[Path], out: Path, command: str) -> None:
    rows = [json.loads(line) for path in paths for line in path.read_text().splitlines()]
    lines = [
        "# The mixture with normalize both against l2 on two members' latents",
        "",
        f"Command: `{command}` (rows: {', '.join(p.name for p in paths)}, written by `scalings.py` "
        "fit runs; see the first lines of `benchmarks/scalings.py`).",
        f"Machine: {machine()['cpu_count']} CPU cores.",
        "",
        "| latents | normalize | pairs | acc | NMI | kept none | per pair (acc) | mixture seconds |",
        "| --- | --- | ---: | --- | --- | ---: | --- | --- |",
    ]
    for name in sorted({r["name"] for r in rows}):
        for normalize in SETTINGS:
            group = sorted((r for r in rows if r["name"] == name and r["normalize"] == normalize),
                           key=lambda r: r["pair"])  # fmt: skip
            if not group:
                continue
            acc, nmi = mean_sd([r["acc"] for r in group]), mean_sd([r["nmi"] for r in group])
            seconds = [r["seconds"] for r in group]
            each = " ".join(f"{r['acc']:.3f}" for r in group)
            kept_none = sum(r["scaling"] == "none" for r in group)
            spread = f"{min(seconds):.0f}-{max(seconds):.0f}"
            lines.append(
                f"| {name} | {normalize} | {len(group)} | {acc[0]:.3f} ± {acc[1]:.3f} | "
                f"{nmi[0]:.3f} ± {nmi[1]:.3f} | {kept_none} | {each} | {spread} |"
            )
    out.mkdir(parents=True, exist_ok=True)
    (out / "scalings.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def smoke(out: Path) -> None:
    """Two encoders of 16 random numbers on 300 points in 3 groups: one pair fitted, reported."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    labels = np.arange(300) % 3
    for s in range(2):
        x = rng.normal(size=(300, 16)) + labels[:, None] * 3.0
        np.savez(out / f"toy_encoder{s}.npz", fit=x, held_out=x, fit_labels=labels, held_out_labels=labels)
    fit_rows(out, "toy", out / "toy.jsonl", n_jobs=1)
    report([out / "toy.jsonl"], out, "scalings.py --smoke")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", nargs="?", choices=("fit", "report"), default="fit")
    parser.add_argument("--latents", type=Path, help="fit: the folder of NAME_encoderS.npz")
    parser.add_argument("--name", help="fit: NAME (digits, mnist, mnist3k)")
    parser.add_argument("--tail", action="store_true", help="fit: the long-tailed subsets of the digits")
    parser.add_argument(
        "--first", type=int, default=0, help="fit: the first pair (pairs first, first + 1, ...)"
    )
    parser.add_argument("--rows", type=Path, nargs="*", default=[], help="report: the fit steps' .jsonl")
    parser.add_argument("--out", type=Path, default=None, help="fit: the .jsonl; report: a folder")
    parser.add_argument("--smoke", action="store_true", help="one toy pair, then report")
    args = parser.parse_args(argv)
    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    if args.smoke:
        smoke(output_folder(args.out, True))
    elif args.step == "fit":
        fit_rows(args.latents, args.name, args.out, args.tail, first=args.first)
    else:
        report(args.rows, args.out, command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
