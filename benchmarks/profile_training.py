"""Where the training time goes, and what the usual CPU speed-ups do to it.

    python benchmarks/profile_training.py                    # what profile.md holds
    python benchmarks/profile_training.py --smoke --out DIR  # does it run? a tiny network, seconds
    python benchmarks/profile_training.py --objective contrastive --options fp32,channels_last \
        --out benchmarks/results/profile_contrastive            # the NT-Xent loop (batch 256)
    python benchmarks/profile_training.py --objective contrastive \
        --options bf16+channels_last,bf16+channels_last+compile --steps 8 \
        --out benchmarks/results/profile_compile                # options joined by + run together

1. torch.profiler over aegmm's own training loop (`train_autoencoder`, default network, batch
   128, one epoch over 2,560 CIFAKE images): the operators with the most self CPU time, and the
   share of the step that is not the network (batch assembly, normalisation, the optimiser).
2. Bare optimisation steps of the default network under each option the speed issue names:
   float32 eager (what aegmm does), bfloat16 autocast, channels-last memory format, and
   torch.compile (with its compile time), each at 1 and 2 threads.

With ``--objective contrastive`` both parts measure the NT-Xent loop instead (`train_contrastive`,
batch 256: two augmented views per image through the encoder and the projection head); its bare
steps take two fixed views of a random batch (no augmentation), and a third part times the
augmentation alone (`aegmm.augment.augment`, both views of one batch).

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

from aegmm.augment import augment, default_policy
from aegmm.config import ModelConfig, TrainConfig
from aegmm.contrastive import ContrastiveConfig, ContrastiveModel, nt_xent, train_contrastive
from aegmm.nn import AutoEncoder
from aegmm.preprocess import Normalizer, conform_images
from aegmm.train import train_autoencoder
from common import CIFAKE_SUBSET, machine, output_folder

BATCH = 128
CONTRASTIVE_BATCH = 256  # images per step of the NT-Xent loop (512 views)
LOOPS = {  # objective: (images per step, the library's training loop)
    "reconstruction": (BATCH, train_autoencoder),
    "contrastive": (CONTRASTIVE_BATCH, train_contrastive),
}
SMOKE_MODEL = ModelConfig(image_size=16, latent_dim=8, width=0.125)  # --smoke: a tiny network
NETWORK_OPS = ("conv", "batch_norm", "relu", "add", "linear", "addmm", "mm", "mse_loss", "threshold")


def profile_loop(images: np.ndarray, config: ModelConfig, objective: str, top: int = 15) -> dict:
    """Operators by self CPU time over one epoch of the real training loop."""
    batch, loop = LOOPS[objective]
    train = TrainConfig(epochs=1, batch_size=batch, val_fraction=0.0, device="cpu", objective=objective)
    normalizer = Normalizer.fit(images)
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        loop(images, config, train, normalizer, progress=False)
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


STEP_OPTIONS = ("fp32", "bf16", "channels_last", "compile")


def step_rate(option: str, threads: int, steps: int, config: ModelConfig, objective: str) -> dict:
    """Images per second of bare training steps of the network `config` under `option`: one of
    STEP_OPTIONS, or several joined by "+" (``bf16+channels_last+compile``: all three at once)."""
    parts = set(option.split("+"))  # checked by main
    torch.set_num_threads(threads)
    contrastive, batch = objective == "contrastive", LOOPS[objective][0]
    model = (ContrastiveModel(config, ContrastiveConfig()) if contrastive else AutoEncoder(config)).train()
    x = torch.randn(batch * (2 if contrastive else 1), config.channels, config.image_size, config.image_size)
    if "channels_last" in parts:
        model, x = (
            model.to(memory_format=torch.channels_last),
            x.contiguous(memory_format=torch.channels_last),
        )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    net, compile_seconds = model, 0.0
    if "compile" in parts:
        net = torch.compile(model)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if "bf16" in parts else nullcontext()

    def step() -> None:
        with autocast:
            output, _ = net(x)
            if contrastive:  # output: the projections of both views
                loss = nt_xent(output[:batch].float(), output[batch:].float(), ContrastiveConfig.temperature)
            else:
                loss = torch.nn.functional.mse_loss(output.float(), x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    try:
        t0 = time.perf_counter()
        step()  # warm-up (and compilation)
        compile_seconds = time.perf_counter() - t0 if "compile" in parts else 0.0
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
        "images_per_second": round(batch / statistics.median(times), 1),
        "best_images_per_second": round(batch / min(times), 1),
        "compile_seconds": round(compile_seconds, 1),
    }


def step_rate_isolated(option: str, threads: int, steps: int, smoke: bool, objective: str) -> dict:
    """`step_rate` in a child process: a crash in a kernel (a channels-last backward crashed in
    oneDNN with torch 2.14.1) is recorded instead of ending the benchmark."""
    command = [sys.executable, __file__, "--step", option, "--threads", str(threads), "--steps", str(steps)]
    command += ["--objective", objective] + (["--smoke"] if smoke else [])
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or [""])[-1][:200]
        return {
            "option": option,
            "threads": threads,
            "error": f"process died (status {done.returncode}) {tail}",
        }
    return json.loads(done.stdout.strip().splitlines()[-1])


def augment_rate(images: np.ndarray, config: ModelConfig, repeats: int) -> dict:
    """Images per second of drawing both views of a batch (the loop's augmentation, nothing else)."""
    normalizer = Normalizer.fit(images)
    x = normalizer.to_tensor(images[:CONTRASTIVE_BATCH], torch.device("cpu"))
    policy, generator = default_policy(config.channels), torch.Generator().manual_seed(0)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        for _ in range(2):
            augment(x, policy, normalizer, generator)
        times.append(time.perf_counter() - t0)
    return {"batch": len(x), "images_per_second": round(len(x) / statistics.median(times[1:]), 1)}


def write_markdown(report: dict, path: Path) -> None:
    loop = report["loop"]
    function, batch = report.get("loop_function", "train_autoencoder"), report.get("batch", BATCH)
    lines = [
        "# Where aegmm's training time goes (CPU)",
        "",
        f"Command: `{report['command']}`. "
        f"Machine: {report['machine']['cpu_count']} CPU cores, torch {report['machine']['torch']}, "
        f"load average {report['machine']['load_average']} at the start. Network: ModelConfig("
        + ", ".join(f"{k}={v}" for k, v in report["network"].items())
        + ").",
        "",
        f"## torch.profiler over one epoch of `{function}` ({loop['images']:,} images, batch {batch})",
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
        f"## Bare training steps of the network (batch {batch}, median of the timed steps)",
        "",
        "| option | threads | images/s | compile s |",
        "| --- | ---: | ---: | ---: |",
    ]
    for r in report["steps"]:
        rate = r.get("images_per_second", r.get("error", ""))
        lines.append(f"| {r['option']} | {r['threads']} | {rate} | {r.get('compile_seconds', '')} |")
    if "augment" in report:
        lines += [
            "",
            f"## The augmentation alone: both views of a batch of {report['augment']['batch']}",
            "",
            f"{report['augment']['images_per_second']:,} images/s (median of the timed batches; "
            "each image gets two views).",
        ]
    lines += ["", *report.get("notes", [])]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for profile.md and profile.json")
    parser.add_argument("--steps", type=int, default=15, help="timed steps per option")
    parser.add_argument(
        "--options",
        default=None,
        help="comma list of step options (default fp32,bf16,channels_last,compile; --smoke: bf16); "
        "join options with + to combine them, e.g. bf16+channels_last+compile",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="check that the script runs: a tiny network (16x16, width 0.125, latent 8), 256 images, "
        "2 timed steps; writes to a temporary folder unless --out is given",
    )
    parser.add_argument(
        "--objective",
        choices=("reconstruction", "contrastive"),
        default="reconstruction",
        help="the loop to profile: the autoencoder's (batch 128) or NT-Xent's (batch 256)",
    )
    parser.add_argument("--step", help=argparse.SUPPRESS)  # internal: one option, in a child
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    config = SMOKE_MODEL if args.smoke else ModelConfig().resolve(args.objective)  # latent 32
    if args.step:
        print(json.dumps(step_rate(args.step, args.threads, args.steps, config, args.objective)))
        return 0
    try:
        args.out = output_folder(args.out, args.smoke)
    except ValueError as exc:
        parser.error(str(exc))
    options = args.options or ("bf16" if args.smoke else "fp32,bf16,channels_last,compile")
    unknown = {part for option in options.split(",") for part in option.split("+")} - set(STEP_OPTIONS)
    if unknown:
        expected = ", ".join(STEP_OPTIONS)
        parser.error(f"--options: expected {expected} (joined by + to combine), found {sorted(unknown)}")
    steps = min(args.steps, 2) if args.smoke else args.steps
    images = np.load(CIFAKE_SUBSET)["images"][: 256 if args.smoke else 2560]
    images = conform_images(images, config.image_size, config.channels)
    threads = torch.get_num_threads()
    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    report = {"command": command, "machine": machine(), "network": asdict(config)}
    report["batch"], loop = LOOPS[args.objective]
    report["loop_function"] = loop.__name__
    report["loop"] = profile_loop(images, config, args.objective)
    if args.objective == "contrastive":
        report["augment"] = augment_rate(images, config, steps)
    report["steps"] = [
        step_rate_isolated(option, n, steps, args.smoke, args.objective)
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
