"""`aegmm fit` end to end at several commits of this repository, in one run on the same data.

    python benchmarks/cifake_split.py --out /tmp/cifake        # fit.npz: the 16,000-image split
    python benchmarks/fit_before_after.py --data /tmp/cifake/fit.npz --refs 4c3cfa0,889cb6a,HEAD \
        --repeats 2 --threads 1 -- --epochs 1
    python benchmarks/fit_before_after.py --smoke                # builtin:digits, seconds

Each ref's ``src/`` is exported with ``git archive`` into a temporary folder and run as
``python -m aegmm --threads T fit DATA --out RUN --quiet [FIT ARGS]`` with that folder first on
PYTHONPATH, so every ref runs under the same Python, torch and data. The runs are interleaved
(ref 1, ref 2, ..., then again), so a change in the machine's load touches every ref alike; the
1-minute load average is read before each run. Peak RSS is the child's ru_maxrss.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, machine, output_folder


def export(ref: str, into: Path) -> tuple[str, Path]:
    """The commit id of ``ref`` and a folder holding its src/ tree; ref "." is the working tree."""
    if ref == ".":
        return "working tree", REPO / "src"
    sha = subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    folder = into / sha
    folder.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", sha, "src"], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return sha, folder / "src"


def fit_once(src: Path, data: str, out: Path, threads: int, fit_args: list[str]) -> dict:
    """Wall seconds, peak RSS and the load before one ``aegmm fit`` from the tree ``src``."""
    env = os.environ | {"PYTHONPATH": str(src), "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "aegmm", "--threads", str(threads), "fit", data, "--out", str(out)]
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([*command, "--quiet", *fit_args], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()[-400:]}")
    return {
        "seconds": round(seconds, 1),
        "cpu_seconds": round((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), 1),
        "peak_rss_mib": round(after.ru_maxrss / 1024, 0),  # the largest child so far
        "load_1min_before": round(load, 2),
        "summary": done.stdout.strip().splitlines()[0] if done.stdout.strip() else "",
    }


def markdown(payload: dict) -> str:
    m = payload["machine"]
    lines = [
        "# `aegmm fit` end to end, before and after (one run, same data)",
        "",
        f"Command: `{payload['command']}`",
        "",
        f"Data: {payload['data']}; fit arguments `{' '.join(payload['fit_args']) or '(defaults)'}`, "
        f"--threads {payload['threads']}. Machine: {m['cpu_count']} CPU cores, torch {m['torch']}, "
        f"{m['date']}; load average at the start {m['load_average']}. Runs interleaved over the refs."
        + (
            " Other jobs shared the cores (a 1-minute load above 1 before a run), so the times are "
            "pessimistic; the refs shared them alike."
            if max(r["load_1min_before"] for r in payload["runs"]) > 1
            else ""
        ),
        "",
        "| ref | commit | run | wall s | CPU s | peak RSS MiB (largest child so far) | load before |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in payload["runs"]:
        lines.append(
            f"| {row['ref']} | {row['commit']} | {row['repeat']} | {row['seconds']} | {row['cpu_seconds']} | "
            f"{row['peak_rss_mib']:.0f} | {row['load_1min_before']} |"
        )
    lines += ["", "| ref | commit | mean wall s | runs |", "| --- | --- | ---: | ---: |"]
    for ref, commit in payload["refs"].items():
        times = [r["seconds"] for r in payload["runs"] if r["ref"] == ref]
        if not times:  # not run yet: the file is rewritten after every run
            continue
        lines.append(f"| {ref} | {commit} | {sum(times) / len(times):.1f} | {', '.join(map(str, times))} |")
    return "\n".join(lines) + "\n"


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    fit_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="builtin:digits", help="what `aegmm fit` reads")
    parser.add_argument(
        "--refs",
        default="HEAD~1,HEAD",
        help="comma-separated git refs, oldest first; '.' is the working tree",
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="fit_before_after", help="results file stem")
    parser.add_argument("--out", type=Path, default=None, help="default benchmarks/results")
    parser.add_argument(
        "--smoke", action="store_true", help="builtin:digits, tiny network, the working tree twice"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.data, args.refs, args.repeats, args.threads = "builtin:digits", ".,.", 1, 1
        fit_args = ["--epochs", "1", "--image-size", "8", "--width", "0.125", "--latent-dim", "4",
                    "--reducer", "pca", "--reduced-dim", "4", "--clusters", "3"]  # fmt: skip
    return args, fit_args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args, fit_args = parse(argv)
    out = output_folder(args.out, args.smoke)
    refs = args.refs.split(",")
    payload = {
        "command": "python benchmarks/fit_before_after.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "data": args.data,
        "fit_args": fit_args,
        "threads": args.threads,
        "machine": machine(),
        "refs": {},
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="aegmm-refs-") as scratch:
        trees = {}
        for ref in refs:
            payload["refs"][ref], trees[ref] = export(ref, Path(scratch) / "trees")
        for repeat in range(1, args.repeats + 1):
            for i, ref in enumerate(refs):
                run = Path(scratch) / f"run-{i}-{repeat}"
                row = fit_once(trees[ref], args.data, run, args.threads, fit_args)
                payload["runs"].append({"ref": ref, "commit": payload["refs"][ref], "repeat": repeat, **row})
                print(f"{ref} ({payload['refs'][ref]}) run {repeat}: {row['seconds']} s", flush=True)
                (out / f"{args.name}.json").write_text(json.dumps(payload, indent=2) + "\n")
                (out / f"{args.name}.md").write_text(markdown(payload))
    print(f"results in {out / args.name}.md")


if __name__ == "__main__":
    main()
