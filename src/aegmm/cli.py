"""The `aegmm` command line: thin verbs over the library (fit, assign, evaluate, demo)."""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import sys
import threading
import time
import zipfile
from pathlib import Path

from .cli_parser import ENCODE_BATCH, build_parser
from .config import TrainConfig as T

USER_ERRORS = (
    ValueError,  # also scikit-learn's NotFittedError
    TypeError,
    FileNotFoundError,
    FileExistsError,
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


def _limit_threads(threads: int | None) -> None:
    """Use at most `threads` CPU threads in torch and in the BLAS/OpenMP pools scikit-learn uses."""
    if threads is None:
        return
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)  # process-wide from here on


def cmd_fit(args: argparse.Namespace) -> int:
    from . import distributed
    from .data import load_images
    from .folders import check_output, input_paths
    from .pipeline import ImageClusterer
    from .progress import say
    from .runs import SKIPPED, check_cluster_count, cluster_sizes, fit_into, skipped_summary

    if args.k_range and args.clusters != "auto":
        raise ValueError(f"--k-range needs --clusters auto, got --clusters {args.clusters}")
    out, start = Path(args.out), time.perf_counter()
    clusterer = ImageClusterer(
        image_size=args.image_size,
        latent_dim=args.latent_dim,
        stem=args.stem,
        width=args.width,
        epochs=args.epochs,
        batch_size=args.batch_size or T.batch_size,
        lr=args.lr,
        noise=args.noise,
        train_images=args.train_images,
        precision=args.precision,
        objective=args.objective,
        temperature=args.temperature,
        n_components=args.clusters,
        k_range=tuple(args.k_range) if args.k_range else ImageClusterer().k_range,
        covariance_type=args.covariance,
        reducer=args.reducer,
        reduced_dim=args.reduced_dim,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
    )
    clusterer.check_params()  # every setting, before touching the output folder
    main_process = distributed.is_main()  # under torchrun, rank 0 alone touches the output folder
    if main_process:
        check_output(out, inputs=input_paths(args.data), resume=args.resume, force=args.force, resumable=True)
    data = load_images(args.data, image_size=args.image_size, progress=not args.quiet and main_process)
    check_cluster_count(clusterer, len(data))
    if main_process:
        if data.skipped:
            print(skipped_summary(data.skipped, listed_in=out / SKIPPED), file=sys.stderr)
        say(f"loaded {len(data):,} images from {args.data}", enabled=not args.quiet)
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
    from .exports import AssignOutputs
    from .io import load
    from .runs import assign_to_csv, format_counts, skipped_summary

    outputs = AssignOutputs.check(args)  # every output refused now, not after the assignment
    clusterer = load(args.run, progress=not args.quiet)
    clusterer.set_params(device=args.device, encode_batch_size=args.batch_size or ENCODE_BATCH)
    outputs.start(clusterer)
    counts, skipped = assign_to_csv(clusterer, args.data, Path(args.out), inputs=outputs.inputs, sink=outputs)
    if skipped:
        print(skipped_summary(skipped, listed_in=Path(args.out)), file=sys.stderr)
    print(
        f"assigned {counts.sum():,} images to K={clusterer.n_components_} clusters "
        f"(sizes {format_counts(counts)}); written to {args.out}"
    )
    for line in outputs.finish(counts):
        print(line)
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
        device=args.device,
        batch_size=args.batch_size or ENCODE_BATCH,
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


VERBS = {"fit": cmd_fit, "assign": cmd_assign, "evaluate": cmd_evaluate, "pack": cmd_pack, "demo": cmd_demo}


# settings named in library errors, and the flags a person typed for them
FLAGS = {
    "n_components": "--clusters",
    "k_range": "--k-range",
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "image_size": "--image-size",
    "latent_dim": "--latent-dim",
    "width": "--width",
    "lr": "--lr",
    "noise": "--noise",
    "train_images": "--train-images",
    "reduced_dim": "--reduced-dim",
    "precision": "--precision",
    "objective": "--objective",
    "temperature": "--temperature",
}


def user_message(exc: BaseException) -> str:
    """The one line shown for a user error, with a setting's Python name replaced by its flag."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    return re.sub(rf"^({'|'.join(FLAGS)})\b", lambda m: FLAGS[m.group(1)], message)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _limit_threads(args.threads)
    try:
        with _sigterm_as_interrupt():
            return VERBS[args.verb](args)
    except USER_ERRORS as exc:
        if args.debug:
            raise
        print(f"aegmm: error: {user_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        stopped = "stopped by SIGTERM" if isinstance(exc, Terminated) else "interrupted"
        hint = (
            "; 'aegmm fit ... --resume' continues from the last complete epoch" if args.verb == "fit" else ""
        )
        print(f"aegmm: {stopped}{hint}", file=sys.stderr)
        return 128 + signal.SIGTERM if isinstance(exc, Terminated) else 130
