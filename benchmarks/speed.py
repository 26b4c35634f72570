"""Speed of aegmm's defaults on this machine, set against the machine's own matrix-multiply rate.

    python benchmarks/speed.py                    # what speed.md holds
    python benchmarks/speed.py --quick            # fewer images and repeats
    python benchmarks/speed.py --smoke --out DIR  # does it run? a tiny network, seconds

Measures, in one process: torch.mm float32 GFLOP/s (best of several 2048x2048 products), and
bfloat16 where the CPU computes it natively; the FLOPs per image of the default network
(torch.utils.flop_counter.FlopCounterMode); training and encoding images per second at 32x32
with batch 128, also as a fraction of the FLOP-bound rate of the precision each loop trains in
(the contrastive loop trains in bfloat16 autocast on such CPUs, everything else in float32);
GaussianMixture fit time on 20,000 and 100,000 random latent vectors; peak resident memory.
Writes speed.json and speed.md under --out (benchmarks/results by default; a smoke run writes
to a temporary folder and refuses benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from aegmm.config import MixtureConfig, ModelConfig, TrainConfig
from aegmm.mixture import LatentMixture
from aegmm.nn import AutoEncoder
from aegmm.precision import native_bfloat16, resolve_on_device
from aegmm.preprocess import Normalizer, conform_images
from aegmm.train import encode, train_autoencoder
from common import CIFAKE_SUBSET, machine, max_rss_mib, measure, output_folder

BATCH = 128
CONTRASTIVE_BATCH = 256  # the batch of the contrastive runs in results/objectives and levers
# --smoke: a tiny network and mixture, so that every measurement runs in a fraction of a second
SMOKE_MODEL = ModelConfig(image_size=16, latent_dim=8, width=0.125)
SMOKE_MIXTURE = MixtureConfig(reduced_dim=4, n_init=1)


def default_network() -> tuple[ModelConfig, MixtureConfig]:
    """The default colour network, its "auto" latent size resolved (32), and its autoencoder's
    mixture (PCA; contrastive features get UMAP instead)."""
    model = ModelConfig().resolve("reconstruction")
    return model, MixtureConfig().resolve(channels=3, objective="reconstruction")


def matmul_gflops(n: int = 2048, repeats: int = 10, dtype: torch.dtype = torch.float32) -> dict:
    """Best and median torch.mm rate in `dtype` (2 n^3 FLOPs per product)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    flops = 2 * n**3
    return {
        "n": n,
        "repeats": repeats,
        "dtype": str(dtype).removeprefix("torch."),
        "best_gflops": round(flops / min(times) / 1e9, 2),
        "median_gflops": round(flops / statistics.median(times) / 1e9, 2),
    }


def network_flops(config: ModelConfig) -> dict:
    """FLOPs per image counted by FlopCounterMode (convolutions and matrix products only)."""
    model = AutoEncoder(config).train()
    x = torch.randn(BATCH, config.channels, config.image_size, config.image_size)
    with FlopCounterMode(display=False) as forward:
        output, _ = model(x)
    loss = torch.nn.functional.mse_loss(output, x)
    with FlopCounterMode(display=False) as backward:
        loss.backward()
    with torch.no_grad(), FlopCounterMode(display=False) as encoder:
        model.eval().encoder(x)
    fwd, bwd = forward.get_total_flops() / BATCH, backward.get_total_flops() / BATCH
    return {
        "forward_per_image": fwd,
        "backward_per_image": bwd,
        "encoder_per_image": encoder.get_total_flops() / BATCH,
        "train_per_image_3x": 3 * fwd,
        "train_per_image_counted": fwd + bwd,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def cifake_images(n: int) -> np.ndarray:
    images = np.load(CIFAKE_SUBSET)["images"]
    reps = -(-n // len(images))
    return np.concatenate([images] * reps)[:n] if reps > 1 else images[:n]


def training_speed(images: np.ndarray, epochs: int, model: ModelConfig) -> dict:
    """aegmm's own training loop (train_autoencoder) with the default settings, batch 128."""
    train = TrainConfig(epochs=epochs, batch_size=BATCH, device="cpu")
    normalizer = Normalizer.fit(images)
    with measure() as cost:
        _, history = train_autoencoder(images, model, train, normalizer, progress=False)
    rates = [h["images_per_second"] for h in history]  # includes the validation pass of each epoch
    return {
        "images": len(images),
        "epochs": epochs,
        "images_per_second_per_epoch": [round(r, 1) for r in rates],
        "images_per_second": round(max(rates), 1),
        "memory": cost.as_dict(),
    }


def contrastive_speed(images: np.ndarray, epochs: int, model: ModelConfig) -> dict:
    """aegmm's NT-Xent loop (train_contrastive: two augmented views per image), batch 256."""
    from aegmm.contrastive import train_contrastive

    train = TrainConfig(epochs=epochs, batch_size=CONTRASTIVE_BATCH, device="cpu", objective="contrastive")
    resolved, _ = resolve_on_device(train, channels=images.shape[-1], n_train=len(images))
    normalizer = Normalizer.fit(images)
    with measure() as cost:
        _, history = train_contrastive(images, model, train, normalizer, progress=False)
    rates = [h["images_per_second"] for h in history]  # images, not views; validation included
    return {
        "images": len(images),
        "epochs": epochs,
        "batch_size": CONTRASTIVE_BATCH,
        "precision": resolved.precision,  # what "auto" chose on this CPU
        "images_per_second_per_epoch": [round(r, 1) for r in rates],
        "images_per_second": round(max(rates), 1),
        "memory": cost.as_dict(),
    }


def step_speed(steps: int, config: ModelConfig) -> dict:
    """Bare optimisation steps on one random batch: the loop's ceiling without data handling."""
    model = AutoEncoder(config).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(BATCH, config.channels, config.image_size, config.image_size)
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        output, _ = model(x)
        loss = torch.nn.functional.mse_loss(output, x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= 2:  # two warm-up steps
            times.append(time.perf_counter() - t0)
    return {
        "steps": steps,
        "best_images_per_second": round(BATCH / min(times), 1),
        "median_images_per_second": round(BATCH / statistics.median(times), 1),
    }


def encoding_speed(images: np.ndarray, batch_size: int, repeats: int, config: ModelConfig) -> dict:
    model = AutoEncoder(config).eval()
    normalizer = Normalizer.fit(images)
    encode(model, images[: 2 * batch_size], normalizer, batch_size=batch_size)  # warm-up
    times = []
    with measure() as cost:
        for _ in range(repeats):
            t0 = time.perf_counter()
            encode(model, images, normalizer, batch_size=batch_size)
            times.append(time.perf_counter() - t0)
    return {
        "images": len(images),
        "batch_size": batch_size,
        "repeats": repeats,
        "images_per_second": round(len(images) / min(times), 1),
        "median_images_per_second": round(len(images) / statistics.median(times), 1),
        "memory": cost.as_dict(),
    }


def random_latents(n: int, dim: int, k: int = 10, seed: int = 0) -> np.ndarray:
    """n vectors from a random K-component Gaussian mixture (overlapping means, random covariances)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=1.0, size=(k, dim))  # overlapping clusters, so EM needs real work
    mixing = rng.normal(size=(k, dim, dim)) / np.sqrt(dim)
    which = rng.integers(k, size=n)
    noise = rng.normal(size=(n, dim))
    return (means[which] + np.einsum("nd,nde->ne", noise, mixing[which])).astype(np.float32)


def mixture_speed(n: int, model: ModelConfig, mixture: MixtureConfig) -> dict:
    """Default mixture on n random vectors: on the reduced size alone, and through LatentMixture."""
    out = {"n": n}
    reduced = random_latents(n, mixture.reduced_dim)
    with measure() as cost:
        fitted = LatentMixture(replace(mixture, reducer="none")).fit(reduced)
    out["gmm_reduced_dim"] = {
        "dim": mixture.reduced_dim,
        "n_iter": int(fitted.gmm_.n_iter_),
        "converged": bool(fitted.gmm_.converged_),
        **cost.as_dict(),
    }
    latents = random_latents(n, model.latent_dim)
    with measure() as cost:
        fitted = LatentMixture(mixture).fit(latents)
    out["latent_mixture_full_path"] = {
        "dim": model.latent_dim,
        "n_iter": int(fitted.gmm_.n_iter_),
        **cost.as_dict(),
    }
    return out


def write_markdown(report: dict, path: Path) -> None:
    m, f, mm = report["machine"], report["flops"], report["matmul"]
    train, enc, step = report["training"], report["encoding"], report["steps"]
    peaks = {"float32": max(mm["best_gflops"], report["matmul_end"]["best_gflops"]) * 1e9}
    if "matmul_bfloat16" in report:
        bf16 = (report["matmul_bfloat16"]["best_gflops"], report["matmul_bfloat16_end"]["best_gflops"])
        peaks["bfloat16"] = max(bf16) * 1e9
    contrastive = report["contrastive"].get("precision", "float32")  # files before it was recorded
    lines = [
        "# Speed of aegmm's defaults" if report["network"].endswith("(the default)") else "# Speed of aegmm",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {m['cpu_count']} CPU cores ({m['processor']}), `torch.get_num_threads()` = "
        f"{m['torch_threads']}, torch {m['torch']}; load average {m['load_average']} at start and "
        f"{report['machine_end']['load_average']} at the end. "
        + (
            "**Other jobs shared the cores (1-minute load average above 1 at the start): every rate "
            "here is pessimistic** (the matmul rate is measured in the same conditions, so the "
            "fractions are less affected than the raw rates)."
            if m["load_average"][0] > 1.0
            else "Nothing else ran on the cores (1-minute load average below 1 at the start)."
        ),
        "",
        f"Network: {report['network']}, "
        f"{f['parameters']:,} parameters. FLOPs counted by FlopCounterMode (convolutions and matrix "
        "products; batch norm, ReLU, additions and Adam are not counted): forward "
        f"{f['forward_per_image'] / 1e6:.1f} MFLOP/image (encoder {f['encoder_per_image'] / 1e6:.1f}), "
        f"backward {f['backward_per_image'] / 1e6:.1f}. Training is taken as 3x forward = "
        f"{f['train_per_image_3x'] / 1e6:.1f} MFLOP/image (the counted forward + backward is "
        f"{f['train_per_image_counted'] / 1e6:.1f}).",
        "",
        "| measurement | value | FLOP-bound rate | fraction |",
        "| --- | --- | --- | --- |",
        f"| torch.mm float32 {mm['n']}x{mm['n']}, best of {mm['repeats']}, start / end of run | "
        f"{mm['best_gflops']} / {report['matmul_end']['best_gflops']} GFLOP/s (medians "
        f"{mm['median_gflops']} / {report['matmul_end']['median_gflops']}) | - | - |",
    ]
    if "matmul_bfloat16" in report:
        b, e = report["matmul_bfloat16"], report["matmul_bfloat16_end"]
        lines.append(
            f"| torch.mm bfloat16 {b['n']}x{b['n']}, best of {b['repeats']}, start / end of run | "
            f"{b['best_gflops']} / {e['best_gflops']} GFLOP/s (medians {b['median_gflops']} / "
            f"{e['median_gflops']}) | - | - |"
        )
    for name, rate, flops, precision in (
        (
            f"training, aegmm loop, {train['images']:,} images, batch {BATCH}, best epoch",
            train["images_per_second"],
            f["train_per_image_3x"],
            "float32",
        ),
        (
            f"training, contrastive in {contrastive} (NT-Xent on 2 views; bound = 2 x 3 x encoder "
            f"forward at the {contrastive} matmul rate), {report['contrastive']['images']:,} images, "
            f"batch {CONTRASTIVE_BATCH}, best epoch",
            report["contrastive"]["images_per_second"],
            6 * f["encoder_per_image"],
            contrastive,
        ),
        (
            f"training, bare steps on one batch of {BATCH}, best",
            step["best_images_per_second"],
            f["train_per_image_3x"],
            "float32",
        ),
        (
            f"encoding, {enc['images']:,} images, batch {enc['batch_size']}, best of {enc['repeats']}",
            enc["images_per_second"],
            f["encoder_per_image"],
            "float32",
        ),
        (
            f"encoding, batch {report['encoding_512']['batch_size']} (the library's batch before this "
            "measurement; now 128)",
            report["encoding_512"]["images_per_second"],
            f["encoder_per_image"],
            "float32",
        ),
    ):
        bound = peaks[precision] / flops
        lines.append(f"| {name} | {rate:,.0f} img/s | {bound:,.0f} img/s | {rate / bound:.1%} |")
    mx = report["mixture_config"]
    lines += [
        "",
        f"| GaussianMixture fit (K={mx['n_components']}, {mx['covariance_type']}, n_init={mx['n_init']}, "
        f"max_iter={mx['max_iter']}) | seconds | EM iterations |",
    ]
    lines.append("| --- | --- | --- |")
    for row in report["mixture"]:
        g, lm = row["gmm_reduced_dim"], row["latent_mixture_full_path"]
        lines.append(
            f"| {row['n']:,} random vectors, {g['dim']}-d (the reduced size) | "
            f"{g['seconds']:.1f} | {g['n_iter']} (best restart) |"
        )
        lines.append(
            f"| {row['n']:,} random vectors, {lm['dim']}-d through LatentMixture "
            f"(standardise + PCA to {g['dim']} + GMM) | {lm['seconds']:.1f} | {lm['n_iter']} |"
        )
    lines += [
        "",
        "Random latents: a random 10-component Gaussian mixture (overlapping means, random full "
        "covariances); EM time depends on how many iterations it needs, given per row.",
        "",
        f"Peak resident memory of the whole run (ru_maxrss): {report['max_rss_mib']:.0f} MiB; during "
        f"training {train['memory']['peak_rss_mib']:.0f} MiB (rise {train['memory']['rise_mib']:.0f}), "
        f"during encoding {enc['memory']['peak_rss_mib']:.0f} MiB.",
        "",
        f"Training images per second per epoch: {train['images_per_second_per_epoch']} "
        "(each epoch's time includes its validation pass over 10% of the images).",
        "",
    ]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1,000 training images, 1 epoch, fewer repeats")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="check that the script runs: a tiny network (16x16, width 0.125, latent 8), 256 images, "
        "1 epoch, 2,000 mixture points; writes to a temporary folder unless --out is given",
    )
    parser.add_argument("--train-images", type=int, default=4000, help="images for the training epochs")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs timed")
    parser.add_argument("--gmm-sizes", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--out", type=Path, default=None, help="folder for speed.json and speed.md")
    args = parser.parse_args(argv)
    try:
        args.out = output_folder(args.out, args.smoke)
    except ValueError as exc:
        parser.error(str(exc))
    # (matmul size, timed steps, encoded images, encoding repeats) of a full, quick and smoke run
    matmul_n, steps, enc_n, repeats = 2048, 10, 6000, 3
    model, mixture = default_network()
    if args.quick:
        args.train_images, args.epochs, args.gmm_sizes = 1000, 1, [20_000]
        steps, enc_n, repeats = 5, 2000, 2
    if args.smoke:
        args.train_images, args.epochs, args.gmm_sizes = 256, 1, [2_000]
        matmul_n, steps, enc_n, repeats = 256, 2, 256, 1
        model, mixture = SMOKE_MODEL, SMOKE_MIXTURE
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    report = {"command": command, "machine": machine(), "network": _describe(model)}
    report["mixture_config"] = asdict(mixture)
    print("matmul and FLOPs", flush=True)
    report["matmul"] = matmul_gflops(matmul_n)
    if native_bfloat16(torch.device("cpu")):  # elsewhere bfloat16 is emulated and nothing trains in it
        report["matmul_bfloat16"] = matmul_gflops(matmul_n, dtype=torch.bfloat16)
    report["flops"] = network_flops(model)
    print("training", flush=True)
    images = conform_images(cifake_images(max(args.train_images, enc_n)), model.image_size, model.channels)
    report["training"] = training_speed(images[: args.train_images], args.epochs, model)
    report["contrastive"] = contrastive_speed(images[: args.train_images], args.epochs, model)
    report["steps"] = step_speed(steps, model)
    print("encoding", flush=True)
    report["encoding"] = encoding_speed(images[:enc_n], BATCH, repeats, model)
    report["encoding_512"] = encoding_speed(images[:enc_n], 512, repeats, model)
    report["mixture"] = []
    for n in args.gmm_sizes:
        print(f"mixture on {n:,}", flush=True)
        report["mixture"].append(mixture_speed(n, model, mixture))
    report["matmul_end"] = matmul_gflops(matmul_n)  # the contention may have changed during the run
    if "matmul_bfloat16" in report:
        report["matmul_bfloat16_end"] = matmul_gflops(matmul_n, dtype=torch.bfloat16)
    report["machine_end"] = machine()
    report["max_rss_mib"] = round(max_rss_mib(), 1)
    (args.out / "speed.json").write_text(json.dumps(report, indent=1))
    write_markdown(report, args.out / "speed.md")
    print(f"wrote {args.out / 'speed.md'}", flush=True)
    return 0


def _describe(config: ModelConfig) -> str:
    default = " (the default)" if config == default_network()[0] else ""
    return "ModelConfig(" + ", ".join(f"{k}={v}" for k, v in asdict(config).items()) + ")" + default


if __name__ == "__main__":
    raise SystemExit(main())
