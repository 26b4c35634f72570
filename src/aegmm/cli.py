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

from .cli_parser import ENCODE_BATCH, FIT_FIELDS, FLAGS, build_parser
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
    from .pipeline import ImageClusterer
    from .runs import cluster_sizes, fit_run

    if args.k_range and args.n_components != "auto":
        raise ValueError(f"--k-range needs --clusters auto, got --clusters {args.n_components}")
    if args.train_minutes and args.epochs != "auto":
        raise ValueError(
            f"--train-minutes sets the epochs, so it needs --epochs auto, got --epochs {args.epochs}"
        )
    params = {name: getattr(args, name) for name in FIT_FIELDS if getattr(args, name) is not None}
    batch_size = args.batch_size or T.batch_size
    clusterer = ImageClusterer(**params, batch_size=batch_size, device=args.device, progress=not args.quiet)
    start = time.perf_counter()
    clusterer, table = fit_run(args.data, args.out, clusterer, resume=args.resume, force=args.force)
    distributed.shutdown()
    if table is not None:
        k, n = clusterer.n_components_, len(table.cluster)
        print(
            f"fitted K={k} clusters on {n:,} images in {time.perf_counter() - start:.0f} s; "
            f"cluster sizes {cluster_sizes(table.cluster, k)}"
        )
        print(f"model and assignments written to {args.out}/ (assignments.csv)")
    return 0


def cmd_assign(args: argparse.Namespace) -> int:
    from .exports import AssignExtras
    from .runs import assign_run, format_counts, skipped_summary

    extras = AssignExtras(
        gallery=args.gallery, export=args.export, copy=args.copy, link=args.link, latents=args.latents
    )
    batch_size, progress = args.batch_size or ENCODE_BATCH, not args.quiet
    done = assign_run(
        args.run,
        args.data,
        args.out,
        extras=extras,
        device=args.device,
        batch_size=batch_size,
        progress=progress,
    )
    if done.skipped:
        print(skipped_summary(done.skipped, listed_in=Path(args.out)), file=sys.stderr)
    k = done.clusterer.n_components_
    print(
        f"assigned {done.counts.sum():,} images to K={k} clusters (sizes {format_counts(done.counts)}); "
        f"written to {args.out}"
    )
    for line in done.lines:
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
