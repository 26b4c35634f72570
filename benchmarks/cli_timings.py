"""Wall time of the command line as a user meets it: `aegmm --help`, each verb's --help, and
`aegmm demo`, with the load average before each run (idle or shared cores), and the size of the
installed torch (and NVIDIA libraries) on disk.

    python benchmarks/cli_timings.py                    # writes benchmarks/results/cli_timings.{md,json}
    python benchmarks/cli_timings.py --smoke            # --help only, into a temporary folder
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from common import machine, output_folder

VERBS = ("fit", "assign", "evaluate", "pack", "demo")


def timed(argv: list[str], cwd: Path, repeats: int = 1) -> dict:
    """Median wall time of ``python -m aegmm ARGV`` over ``repeats`` runs, and the load average."""
    load, seconds = os.getloadavg()[0], []
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "aegmm", *argv], cwd=cwd, capture_output=True, text=True)
        seconds.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise RuntimeError(f"aegmm {' '.join(argv)} failed: {done.stderr.strip()[-300:]}")
    return {
        "command": "aegmm " + " ".join(argv),
        "seconds": sorted(seconds)[len(seconds) // 2],
        "load_1min": load,
    }


def installed_size_mib() -> dict:
    """Disk size of torch and of the nvidia-* packages in this environment's site-packages."""
    site = Path(sysconfig.get_paths()["purelib"])

    def size(paths) -> float:
        return sum(f.stat().st_size for p in paths for f in p.rglob("*") if f.is_file()) / 2**20

    return {
        "torch": round(size([site / "torch"]), 1),
        "nvidia": round(size(site.glob("nvidia*")), 1),
        "site_packages": round(size([site]), 1),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--label", help="how the cores were (default: from the load average at the start)")
    parser.add_argument("--smoke", action="store_true", help="only the --help timings, in a temporary folder")
    args = parser.parse_args(argv)
    out = output_folder(args.out, args.smoke)
    facts = machine()  # before the runs: their own load must not count
    work = Path(tempfile.mkdtemp(prefix="aegmm-cli-"))
    rows = [timed(["--help"], work, repeats=5)] + [timed([v, "--help"], work, repeats=3) for v in VERBS]
    if not args.smoke:
        rows.append(timed(["demo", "--out", str(work / "demo")], work))
    result = {
        "command": "python benchmarks/cli_timings.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "label": args.label or ("idle" if facts["load_average"][0] < 0.5 else "shared with another job"),
        "machine": facts,
        "timings": rows,
        "installed_mib": installed_size_mib(),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "cli_timings.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "cli_timings.md").write_text(render(result))
    print(f"wrote {out / 'cli_timings.md'}")


def render(result: dict) -> str:
    m, sizes = result["machine"], result["installed_mib"]
    lines = [
        "# Command-line timings",
        "",
        f"Command: `{result['command'].strip()}`. Cores: {result['label']} ({m['cpu_count']} CPUs; "
        f"load average at the start {m['load_average']}); torch {m['torch']}, {m['date']}.",
        "",
        "| command | wall time (s) | 1-min load before |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| `{r['command']}` | {r['seconds']:.2f} | {r['load_1min']:.2f} |" for r in result["timings"]]
    lines += [
        "",
        f"Installed on disk: torch {sizes['torch']:,.0f} MiB, nvidia-* libraries {sizes['nvidia']:,.0f} MiB, "
        f"all of site-packages {sizes['site_packages']:,.0f} MiB.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
