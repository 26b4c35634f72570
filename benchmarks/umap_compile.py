"""What numba's compilation of UMAP costs each fresh process, with and without aegmm keeping it on disk.

For each mode, a fresh numba cache folder (`NUMBA_CACHE_DIR`) and then `--processes` fresh Python
processes one after the other, each fitting aegmm's UMAP embedding (`UMAPPlacement`, 10
dimensions, as the mixture does) on the same points: the first process of a mode starts from an
empty cache, the later ones find what the earlier wrote. `uncached` turns
`aegmm.embedding.keep_compiled` off in the child, so only pynndescent's own cached functions are
kept (umap-learn's are compiled in every process, as before aegmm kept them). Every process
reports its wall time of the fit (with the compilation) and a checksum of the embedding, which
must be the same in every process and mode.

    python benchmarks/umap_compile.py --out benchmarks/results/umap_compile

    python benchmarks/umap_compile.py --smoke   # does it run? 200 points, one cached process

The smoke run keeps the environment's numba cache folder (no cold start to wait for).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from common import machine, output_folder

MODES = ("uncached", "cached")


def points(n: int) -> np.ndarray:
    """The first n of scikit-learn's digits (1,797 images, 64 pixels), repeated with a little noise
    past 1,797, unit length as the mixture's L2 setting gives."""
    from sklearn.datasets import load_digits

    digits = load_digits().data.astype(np.float32)
    rng = np.random.default_rng(0)
    x = np.concatenate([digits + rng.normal(0, 0.5, digits.shape)] * (n // len(digits) + 1))[:n]
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def child(mode: str, n: int) -> dict:
    """One fresh process's fit (run as `--child MODE N`); printed as one JSON line."""
    import warnings

    import aegmm.embedding as embedding

    if mode == "uncached":
        embedding.keep_compiled = lambda package: None
    x = points(n)
    warnings.filterwarnings("ignore", message="n_jobs value")
    started = time.perf_counter()
    placed = embedding.UMAPPlacement(n_components=10, random_state=0).fit(x).embedding_
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "sha256": hashlib.sha256(placed.tobytes()).hexdigest()[:16]}


def run_mode(mode: str, n: int, processes: int, threads: int, fresh_cache: bool = True) -> list[dict]:
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory(prefix="aegmm-numba-") if fresh_cache else nullcontext() as cache:
        if cache is not None:
            env["NUMBA_CACHE_DIR"] = cache
        for index in range(processes):
            load = os.getloadavg()[0]
            command = [sys.executable, __file__, "--child", mode, str(n)]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append({"mode": mode, "process": index + 1, "load_1min": round(load, 2), **row})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def describe(facts: dict) -> str:
    keys = ("processor", "cpu_count", "python", "torch", "sklearn", "load_average", "date")
    return ", ".join(f"{key} {facts[key]}" for key in keys)


def markdown(report: dict) -> str:
    fresh = report["smoke"] is False
    cache = "a fresh numba cache folder per mode" if fresh else "the environment's numba cache folder"
    lines = [
        "# numba's compilation of UMAP in fresh processes",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {describe(report['machine'])}. {report['points']:,} points, {report['threads']} "
        f"thread(s); each process fits aegmm's 10-dimensional UMAP embedding; {cache}.",
        "",
        "| mode | process | fit with compilation (s) | load before | embedding sha256 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in report["rows"]:
        cells = (row["mode"], row["process"], f"{row['seconds']:.2f}", row["load_1min"], row["sha256"])
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    same = len({row["sha256"] for row in report["rows"]}) == 1
    lines += ["", f"Every process's embedding identical: {'yes' if same else 'NO'}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        print(json.dumps(child(argv[1], int(argv[2]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1797)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    out = output_folder(args.out, args.smoke)
    out.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        n, rows = 200, run_mode("cached", 200, 1, args.threads, fresh_cache=False)
    else:
        n = args.points
        rows = [row for mode in MODES for row in run_mode(mode, n, args.processes, args.threads)]
    report = {
        "command": "python benchmarks/umap_compile.py " + " ".join(argv),
        "machine": machine(),
        "points": n,
        "threads": args.threads,
        "smoke": args.smoke,
        "rows": rows,
    }
    (out / "umap_compile.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "umap_compile.md").write_text(markdown(report))
    print(f"wrote {out / 'umap_compile.md'}")


if __name__ == "__main__":
    main()
