"""The `aegmm` command line: thin verbs over the library (fit, assign, evaluate, demo)."""

from __future__ import annotations

import argparse
import contextlib
import math
import signal
import sys
import threading
import time
import zipfile
from pathlib import Path

from sklearn.exceptions import NotFittedError

from .config import PRECISIONS
from .config import MixtureConfig as X
from .config import ModelConfig as M
from .config import TrainConfig as T

USER_ERRORS = (
    ValueError,
    TypeError,
    FileNotFoundError,
    FileExistsError,
    NotFittedError,
    FloatingPointError,
    NotADirectoryError,
    PermissionError,
    OSError,  # e.g. a full disk or an --out that is a folder: one line, not a traceback
    zipfile.BadZipFile,
)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C: files being written are cleaned up, checkpoints stay valid."""


def _terminate(signum, frame) -> None:
    raise Terminated


@contextlib.contextmanager
def _sigterm_as_interrupt():
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _threads(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of threads >= 1, got {text!r}")
    return int(text)


def _limit_threads(threads: int | None) -> None:
    """Use at most `threads` CPU threads in torch and in the BLAS/OpenMP pools scikit-learn uses."""
    if threads is None:
        return
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)  # process-wide from here on


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _clusters(text: str) -> int | str:
    if text == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of clusters or 'auto', got {text!r}") from None


def cmd_fit(args: argparse.Namespace) -> int:
    from . import distributed
    from .data import load_images
    from .folders import check_output, input_paths
    from .pipeline import ImageClusterer
    from .runs import SKIPPED, check_cluster_count, cluster_sizes, fit_into, skipped_summary

    out, start = Path(args.out), time.perf_counter()
    clusterer = ImageClusterer(
        image_size=args.image_size,
        latent_dim=args.latent_dim,
        stem=args.stem,
        width=args.width,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        noise=args.noise,
        train_images=args.train_images,
        precision=args.precision,
        n_components=args.clusters,
        covariance_type=args.covariance,
        reducer=args.reducer,
        reduced_dim=args.reduced_dim,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
    )
    clusterer._configs(channels=3)  # validate every setting before touching the output folder
    main_process = distributed.is_main()  # under torchrun, rank 0 alone touches the output folder
    if main_process:
        check_output(out, inputs=input_paths(args.data), resume=args.resume, force=args.force, resumable=True)
    data = load_images(args.data, image_size=args.image_size, progress=not args.quiet and main_process)
    check_cluster_count(clusterer, len(data))
    if main_process:
        summary = skipped_summary(data.skipped, listed_in=out / SKIPPED)
        print(summary or f"loaded {len(data):,} images from {args.data}", file=sys.stderr)
    clusterer, table = fit_into(data, out, clusterer, resume=args.resume, force=args.force)
    distributed.shutdown()
    if table is not None:
        sizes = cluster_sizes(table.cluster, clusterer.n_components_)
        print(
            f"fitted K={clusterer.n_components_} clusters on {len(data):,} images in "
            f"{time.perf_counter() - start:.0f} s; cluster sizes {sizes}"
        )
        print(f"model and assignments written to {out}/ (assignments.csv)")
    return 0


def cmd_assign(args: argparse.Namespace) -> int:
    from .folders import check_output_file, input_paths
    from .io import load
    from .runs import assign_to_csv, format_counts, skipped_summary

    inputs = input_paths(args.run, args.data)
    if args.gallery:  # refused now, not after the assignment
        from .evaluation.plots import is_aegmm_png

        check_output_file(Path(args.gallery), inputs=inputs, flag="--gallery", written_by_aegmm=is_aegmm_png)
    clusterer = load(args.run, progress=not args.quiet)
    first, images, counts, skipped = assign_to_csv(clusterer, args.data, Path(args.out), inputs=inputs)
    if skipped:
        print(skipped_summary(skipped, listed_in=Path(args.out)), file=sys.stderr)
    print(
        f"assigned {counts.sum():,} images to K={clusterer.n_components_} clusters "
        f"(sizes {format_counts(counts)}); written to {args.out}"
    )
    if args.gallery:
        from .evaluation.plots import assignment_gallery

        assignment_gallery(images, first, Path(args.gallery))
        print(f"gallery written to {args.gallery}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation.evaluate import evaluate_run

    report = evaluate_run(
        Path(args.run),
        args.data,
        Path(args.out),
        seed=args.seed,
        force=args.force,
        progress=not args.quiet,
        positive=args.positive,
    )
    print(f"report written to {report}")
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    from .data.pack import pack_images

    result = pack_images(
        args.data, Path(args.out), image_size=args.image_size, channels=args.channels, progress=not args.quiet
    )
    print(
        f"packed {result['images']:,} images into {result['path']} ({result['skipped']} skipped; "
        f"see {Path(args.out).with_suffix('.json')})"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), force=args.force, progress=not args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aegmm",
        description="Cluster image collections: a ResNet-18 autoencoder compresses each image, "
        "a Gaussian mixture groups the latent vectors.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument(
        "--threads",
        type=_threads,
        default=None,
        help="CPU threads to use (default: one per core); fewer when other jobs share the machine",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    fit = verbs.add_parser("fit", help="train the autoencoder and the mixture on a set of images")
    fit.add_argument("data", help="a folder of images, a .zip, an .npz, or builtin:digits")
    fit.add_argument("--out", required=True, help="run folder to write the model and assignments to")
    fit.add_argument(
        "--clusters",
        type=_clusters,
        default=X.n_components,
        help=f"number of clusters K, or 'auto' (lowest BIC) (default {X.n_components})",
    )
    fit.add_argument("--epochs", type=int, default=T.epochs, help=f"training epochs (default {T.epochs})")
    fit.add_argument(
        "--image-size",
        type=int,
        default=M.image_size,
        help=f"images are resized to this square size (default {M.image_size})",
    )
    fit.add_argument(
        "--latent-dim", type=int, default=M.latent_dim, help=f"latent vector size (default {M.latent_dim})"
    )
    fit.add_argument(
        "--stem",
        choices=["small", "standard"],
        default=M.stem,
        help="small: 3x3 conv, no max-pool (small images); standard: torchvision's 7x7 + max-pool",
    )
    fit.add_argument(
        "--width",
        type=float,
        default=M.width,
        help=f"channel multiplier; 1.0 = full ResNet-18 (default {M.width})",
    )
    fit.add_argument(
        "--batch-size",
        type=int,
        default=T.batch_size,
        help=f"images per training step (default {T.batch_size})",
    )
    fit.add_argument("--lr", type=_finite, default=T.lr, help=f"Adam learning rate (default {T.lr})")
    fit.add_argument(
        "--noise",
        type=_finite,
        default=T.noise,
        help=f"denoising: std of input noise during training (default {T.noise})",
    )
    fit.add_argument(
        "--train-images",
        type=int,
        default=T.train_images,
        metavar="N",
        help="train the autoencoder on a random N of the images (default: all); every image is "
        "still encoded and clustered. For millions of images",
    )
    fit.add_argument(
        "--reducer",
        choices=["none", "pca", "umap"],
        default=X.reducer,
        help=f"reduction before the mixture (default {X.reducer}; umap needs aegmm[umap])",
    )
    fit.add_argument(
        "--reduced-dim",
        type=int,
        default=X.reduced_dim,
        help=f"output size of the reducer (default {X.reduced_dim})",
    )
    fit.add_argument(
        "--covariance",
        choices=["full", "tied", "diag", "spherical"],
        default=X.covariance_type,
        help="mixture covariance type (default full)",
    )
    fit.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    fit.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        default=T.precision,
        help="training arithmetic. auto (default): float32 on CPU; on a GPU, bfloat16 autocast where it "
        "supports it, else float16 with a gradient scaler. bfloat16 on CPU: 1.85x the float32 training "
        "steps on this project's test machine (benchmarks/results/profile.md); CPUs without bf16 "
        "instructions emulate it. float16: CUDA only",
    )
    fit.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps")
    fit.add_argument("--resume", action="store_true", help="continue an interrupted run from its last epoch")
    fit.add_argument("--force", action="store_true", help="replace an --out folder that aegmm wrote before")
    fit.add_argument("--quiet", action="store_true", help="no progress bars")
    fit.set_defaults(func=cmd_fit)

    assign = verbs.add_parser("assign", help="cluster new images with a fitted run")
    assign.add_argument("run", help="run folder written by 'aegmm fit'")
    assign.add_argument("data", help="images to assign: a folder, a .zip or an .npz")
    assign.add_argument(
        "--out", required=True, help="CSV file: path,cluster,probability,log_likelihood,skipped"
    )
    assign.add_argument("--gallery", help="also write a PNG grid of the images captioned with their cluster")
    assign.add_argument("--quiet", action="store_true", help="no progress bars")
    assign.set_defaults(func=cmd_assign)

    evaluate = verbs.add_parser(
        "evaluate", help="write an HTML report measuring a fitted run on a set of images"
    )
    evaluate.add_argument("run", help="run folder written by 'aegmm fit'")
    evaluate.add_argument(
        "data", help="images to evaluate on (labels, if any, are used for the label metrics)"
    )
    evaluate.add_argument("--out", required=True, help="folder for report.html, metrics.json and figures/")
    evaluate.add_argument("--seed", type=int, default=0, help="random seed for the resampling measurements")
    evaluate.add_argument(
        "--positive",
        metavar="NAME",
        help="the domain of generated (fake, simulated) images: the positive class of every AUROC "
        "(default: the domain whose name says so, e.g. FAKE or generated)",
    )
    evaluate.add_argument(
        "--force", action="store_true", help="replace an --out folder that aegmm wrote before"
    )
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")
    evaluate.set_defaults(func=cmd_evaluate)

    pack = verbs.add_parser(
        "pack", help="decode a folder or .zip once into a memory-mapped .npy for large runs"
    )
    pack.add_argument("data", help="a folder of images or a .zip")
    pack.add_argument(
        "--out", required=True, help="the .npy file to write (a .json beside it keeps paths and labels)"
    )
    pack.add_argument(
        "--image-size", type=int, default=M.image_size, help=f"square size to store (default {M.image_size})"
    )
    pack.add_argument("--channels", type=int, choices=[1, 3], default=3, help="1 (gray) or 3 (RGB; default)")
    pack.add_argument("--quiet", action="store_true", help="no progress bars")
    pack.set_defaults(func=cmd_pack)

    demo = verbs.add_parser(
        "demo", help="fit, assign and evaluate on built-in digits; no data or network needed"
    )
    demo.add_argument(
        "--out", default="aegmm-demo", help="folder for the demo's outputs (default aegmm-demo)"
    )
    demo.add_argument("--force", action="store_true", help="replace an --out folder that aegmm wrote before")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _limit_threads(args.threads)
    try:
        with _sigterm_as_interrupt():
            return args.func(args)
    except USER_ERRORS as exc:
        if args.debug:
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"aegmm: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        stopped = "stopped by SIGTERM" if isinstance(exc, Terminated) else "interrupted"
        hint = (
            "; 'aegmm fit ... --resume' continues from the last complete epoch" if args.verb == "fit" else ""
        )
        print(f"aegmm: {stopped}{hint}", file=sys.stderr)
        return 128 + signal.SIGTERM if isinstance(exc, Terminated) else 130
