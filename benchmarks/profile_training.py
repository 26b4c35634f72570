"""Where the training time goes, and what the usual CPU speed-ups do to it.

    python benchmarks/profile_training.py                    # what profile.md holds
    python benchmarks/profile_training.py --smoke --out DIR  # does it run? a tiny network, seconds

1. torch.profiler over aegmm's own training loop (`train_autoencoder`, default network, batch
   128, one epoch over 2,560 CIFAKE images): the operators with the most self CPU time, and the
   share of the step that is not the network (batch assembly, normalisation, the optimiser).
2. Bare optimisation steps of the default network under each option the speed issue names:
   float32 eager (what aegmm does), bfloat16 autocast, channels-last memory format, and
   torch.compile (with its compile time), each at 1 and 2 threads.

Writes profile.md and profile.json under --out (benchmarks/results by default; a smoke run
writes to a temporary folder and refuses benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from aegmm.config import ModelConfig, TrainConfig
from aegmm.nn import AutoEncoder
from aegmm.preprocess import Normalizer, conform_images
from aegmm.train import train_autoencoder
from common import CIFAKE_SUBSET, machine, output_folder

BATCH = 128
SMOKE_MODEL = ModelConfig(image_size=16, latent_dim=8, width=0.125)  # --smoke: a tiny network
NETWORK_OPS = ("conv", "batch_norm", "relu", "add", "linear", "addmm", "mm", "mse_loss", "threshold")


def profile_loop(images: np.ndarray, config: ModelConfig, top: int = 15) -> dict:
    """Operators by self CPU time over one epoch of the real training loop."""
    train = TrainConfig(epochs=1, batch_size=BATCH, val_fraction=0.0, device="cpu")
    normalizer = Normalizer.fit(images)
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_autoencoder(images, config, train, normalizer, progress=False)
    wall = time.perf_counter() - start
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    rows = [
        {
            "op": e.key,
            "self_cpu_ms": round(e.self_cpu_time_total / 1000, 1),
            "share": round(e.self_cpu_time_total / total, 4),
            "calls": e.count,
        }
        for e in events[:top]
    ]
    # torch labels each optimiser step "Optimizer.step#Adam.step": its inclusive time is Adam's cost
    optimizer = sum(e.cpu_time_total for e in events if e.key.startswith("Optimizer.step"))
    return {
        "images": len(images),
        "wall_seconds": round(wall, 2),
        "images_per_second": round(len(images) / wall, 1),
        "top": rows,
        "optimizer_share": round(optimizer / total, 4),
    }


def step_rate(option: str, threads: int, steps: int, config: ModelConfig) -> dict:
    """Images per second of bare training steps of the network `config` under `option`."""
    torch.set_num_threads(threads)
    model = AutoEncoder(config).train()
    x = torch.randn(BATCH, config.channels, config.image_size, config.image_size)
    if option == "channels_last":
        model, x = (
            model.to(memory_format=torch.channels_last),
            x.contiguous(memory_format=torch.channels_last),
        )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    net, compile_seconds = model, 0.0
    if option == "compile":
        net = torch.compile(model)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if option == "bf16" else nullcontext()

    def step() -> None:
        with autocast:
            output, _ = net(x)
            loss = torch.nn.functional.mse_loss(output.float(), x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    try:
        t0 = time.perf_counter()
        step()  # warm-up (and compilation)
        compile_seconds = time.perf_counter() - t0 if option == "compile" else 0.0
        step()
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    except Exception as exc:  # e.g. a backend without bf16 kernels: record it, keep going
        return {"option": option, "threads": threads, "error": f"{type(exc).__name__}: {exc}"[:300]}
    return {
        "option": option,
        "threads": threads,
        "images_per_second": round(BATCH / statistics.median(times), 1),
        "best_images_per_second": round(BATCH / min(times), 1),
        "compile_seconds": round(compile_seconds, 1),
    }


def step_rate_isolated(option: str, threads: int, steps: int, smoke: bool) -> dict:
    """`step_rate` in a child process: a crash in a kernel (a channels-last backward crashed in
    oneDNN with torch 2.14.1) is recorded instead of ending the benchmark."""
    command = [sys.executable, __file__, "--step", option, "--threads", str(threads), "--steps", str(steps)]
    command += ["--smoke"] if smoke else []
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or [""])[-1][:200]
        return {
            "option": option,
            "threads": threads,
            "error": f"process died (status {done.returncode}) {tail}",
        }
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_markdown(report: dict, path: Path) -> None:
    loop = report["loop"]
    lines = [
        "# Where aegmm's training time goes (CPU)",
        "",
        f"Command: `{report['command']}`. "
        f"Machine: {report['machine']['cpu_count']} CPU cores, torch {report['machine']['torch']}, "
        f"load average {report['machine']['load_average']} at the start. Network: ModelConfig("
        + ", ".join(f"{k}={v}" for k, v in report["network"].items())
        + ").",
        "",
        f"## torch.profiler over one epoch of `train_autoencoder` ({loop['images']:,} images, batch {BATCH})",
        "",
        f"{loop['wall_seconds']} s under the profiler ({loop['images_per_second']} images/s; the profiler "
        f"itself slows it). Adam's share of CPU time: {loop['optimizer_share']:.1%}.",
        "",
        "| operator | self CPU ms | share | calls |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [
        f"| `{r['op']}` | {r['self_cpu_ms']:,} | {r['share']:.1%} | {r['calls']:,} |" for r in loop["top"]
    ]
    lines += [
        "",
        f"## Bare training steps of the network (batch {BATCH}, median of the timed steps)",
        "",
        "| option | threads | images/s | compile s |",
        "| --- | ---: | ---: | ---: |",
    ]
    for r in report["steps"]:
        rate = r.get("images_per_second", r.get("error", ""))
        lines.append(f"| {r['option']} | {r['threads']} | {rate} | {r.get('compile_seconds', '')} |")
    lines += ["", *report.get("notes", [])]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for profile.md and profile.json")
    parser.add_argument("--steps", type=int, default=15, help="timed steps per option")
    parser.add_argument(
        "--options",
        default=None,
        help="comma list of step options (default fp32,bf16,channels_last,compile; --smoke: bf16)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="check that the script runs: a tiny network (16x16, width 0.125, latent 8), 256 images, "
        "2 timed steps; writes to a temporary folder unless --out is given",
    )
    parser.add_argument("--step", help=argparse.SUPPRESS)  # internal: one option, in a child
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    config = SMOKE_MODEL if args.smoke else ModelConfig()
    if args.step:
        print(json.dumps(step_rate(args.step, args.threads, args.steps, config)))
        return 0
    try:
        args.out = output_folder(args.out, args.smoke)
    except ValueError as exc:
        parser.error(str(exc))
    options = args.options or ("bf16" if args.smoke else "fp32,bf16,channels_last,compile")
    steps = min(args.steps, 2) if args.smoke else args.steps
    images = np.load(CIFAKE_SUBSET)["images"][: 256 if args.smoke else 2560]
    images = conform_images(images, config.image_size, config.channels)
    threads = torch.get_num_threads()
    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    report = {"command": command, "machine": machine(), "network": asdict(config)}
    report["loop"] = profile_loop(images, config)
    report["steps"] = [
        step_rate_isolated(option, n, steps, args.smoke)
        for option in options.split(",")
        for n in sorted({1, threads})
    ]
    torch.set_num_threads(threads)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile.json").write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(report, args.out / "profile.md")
    print((args.out / "profile.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
