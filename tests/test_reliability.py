"""Reliability: bad input, interrupted runs and untrusted model files never lose work or run code.

Training runs use one thread: on 2 shared cores, two busy processes with two threads each can
slow small convolutions down 20-fold, and one thread gives the same results in and out of
subprocesses (the resume test compares weights across processes).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file, save_file

import aegmm
from aegmm import checkpoint
from aegmm.checkpoint import META_FILE, STATE_FILE
from aegmm.cli import main
from aegmm.config import MixtureConfig, ModelConfig, TrainConfig
from aegmm.data import decode as decode_module
from aegmm.data import files as data_files
from aegmm.data import load_images
from aegmm.data.decode import DecodeError, decode_image
from aegmm.mixture import LatentMixture
from aegmm.pipeline import ImageClusterer
from aegmm.preprocess import Normalizer
from aegmm.storage import write_json
from aegmm.train import train_autoencoder
from conftest import two_group_images

TINY_ARGS = [
    "--objective",
    "reconstruction",
    "--image-size",
    "16",
    "--width",
    "0.125",
    "--latent-dim",
    "8",
    "--batch-size",
    "16",
]
TINY_ARGS += ["--clusters", "2", "--reduced-dim", "4", "--quiet"]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reliability")
    np.savez(root / "train.npz", images=two_group_images(40)[0])
    assert (
        main(["fit", str(root / "train.npz"), "--out", str(root / "run"), "--epochs", "1", *TINY_ARGS]) == 0
    )
    return root / "run"


def _error_line(capsys, *, alone: bool = False) -> str:
    """The last line a failed command printed (the only one when `alone`), without a traceback."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("aegmm: ") and (len(lines) == 1 or not alone), lines
    return lines[-1]


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _encode(img: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def _tree(root: Path) -> dict[str, str]:
    """Every file under root with its sha256, to show what a command changed."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# -- 1. bad images are skipped, reported, and every good image is used ---------------------------


def _bad_image_folder(root: Path) -> tuple[set[str], set[str]]:
    """A folder of good images in odd modes and names, and broken files; (good, bad) names."""
    images = two_group_images(16, size=20, seed=3)[0]
    rgb = [Image.fromarray(img) for img in images]
    good = {
        "dark/ñandú 01.png": _encode(rgb[0], "PNG"),
        "dark/日本 画像.jpg": _encode(rgb[2], "JPEG"),
        "dark/cmyk.jpg": _encode(rgb[4].convert("CMYK"), "JPEG"),
        "dark/palette.gif": _encode(rgb[6].convert("P"), "GIF"),
        "dark/gray16.png": _encode(Image.fromarray(images[8, :, :, 0].astype(np.uint16) * 257), "PNG"),
        "dark/gray16.tif": _encode(Image.fromarray(images[10, :, :, 0].astype(np.uint16) * 257), "TIFF"),
        "bright/rgba.png": _encode(rgb[1].convert("RGBA"), "PNG"),
        "bright/with space.PNG": _encode(rgb[3], "PNG"),
        "bright/photo.webp": _encode(rgb[5], "WEBP"),
        "bright/bitmap.bmp": _encode(rgb[7], "BMP"),
        "bright/la.png": _encode(rgb[9].convert("LA"), "PNG"),
        "bright/misnamed_png.jpg": _encode(rgb[11], "PNG"),
    }
    jpeg = _encode(rgb[12], "JPEG")
    bad = {
        "dark/truncated.jpg": jpeg[: len(jpeg) // 2],
        "dark/zero bytes.png": b"",
        "dark/text_named.png": b"this is not an image\n",
        "bright/notes.txt": b"a text file",
        "bright/vector.svg": b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        "bright/icon_as.png": _encode(rgb[13], "ICO"),
        "bright/document.tiff": b"%PDF-1.4 not really a tiff",
    }
    for name, data in {**good, **bad}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "bright" / "dangling.jpg").symlink_to(root / "missing.jpg")
    return set(good), set(bad) | {"bright/dangling.jpg"}


def test_bad_images_are_skipped_with_a_reason_and_every_good_image_is_used(run_dir, tmp_path, capsys):
    folder = tmp_path / "mixed"
    good, bad = _bad_image_folder(folder)
    out = tmp_path / "run"
    assert main(["fit", str(folder), "--out", str(out), "--epochs", "1", *TINY_ARGS]) == 0
    err = capsys.readouterr().err
    rel = lambda p: Path(p).relative_to(folder).as_posix()  # noqa: E731 -- paths are as typed
    skipped = {rel(r["path"]): r["reason"] for r in _rows(out / "skipped.csv")}
    assert set(skipped) == bad and all(skipped.values())
    assert all(f"{folder / name}: {reason}" in err for name, reason in skipped.items())
    used = {
        Path(r["path"]).relative_to(folder).as_posix() for r in _rows(out / "assignments.csv") if r["cluster"]
    }
    assert used == good

    table = tmp_path / "assigned.csv"
    assert main(["assign", str(run_dir), str(folder), "--out", str(table), "--quiet"]) == 0
    err = capsys.readouterr().err
    rows = {rel(r["path"]): r for r in _rows(table)}  # one path convention for every row
    assert len(rows) == len(good) + len(bad)
    assert all(rows[b]["cluster"] == "" and rows[b]["skipped"] == skipped[b] for b in bad)
    assert all(f"{folder / b}: {skipped[b]}" in err for b in bad)

    report = tmp_path / "report"
    assert main(["evaluate", str(run_dir), str(folder), "--out", str(report), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert {rel(r["path"]) for r in _rows(report / "skipped.csv")} == bad
    assert all(f"{folder / b}: {skipped[b]}" in err for b in bad)
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["n_images"] == len(good) and metrics["skipped"] == len(bad)


# -- 2. decompression bombs and huge images: refused or shrunk, with bounded memory --------------


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB pixels, with almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(1000)))


MEASURE = """
import importlib, sys
def peak_mib():  # VmHWM: this process's own peak RSS (ru_maxrss would start at the parent's)
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) // 1024
decode = importlib.import_module(sys.argv[1])  # imported before the baseline is read
data = open(sys.argv[2], "rb").read()
before = peak_mib()
try:
    result = "ok %s" % (decode.decode_image(data, 32, 3).shape,)
except decode.DecodeError as exc:
    result = "DecodeError: %s" % exc
print(peak_mib() - before, result)
"""


def _decode_in_fresh_process(path: Path) -> tuple[int, str]:
    """(peak RSS growth in MiB, outcome) of decoding one file in a new process."""
    argv = [sys.executable, "-c", MEASURE, decode_module.__name__, str(path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=ONE_THREAD, check=True)
    growth, outcome = done.stdout.strip().split(" ", 1)
    return int(growth), outcome


def test_decompression_bombs_are_refused_and_huge_images_shrunk_with_bounded_memory(tmp_path):
    (tmp_path / "claims_40000x40000.png").write_bytes(_png_header(40_000, 40_000))
    (tmp_path / "claims_9000x9000.png").write_bytes(_png_header(9_000, 9_000))
    Image.new("L", (9_500, 9_500), 120).save(tmp_path / "photo_90_megapixels.jpg", quality=80)
    Image.new("I;16", (5_000, 5_000), 30_000).save(tmp_path / "gray16_25_megapixels.png")
    Image.new("RGB", (4_000, 4_000), (10, 20, 30)).save(tmp_path / "photo_16_megapixels.jpg", quality=80)
    expected = {  # name: (outcome, bound on peak RSS growth in MiB)
        "claims_40000x40000.png": ("DecodeError: image too large to decode safely", 16),
        "claims_9000x9000.png": ("DecodeError: image of 9000x9000 pixels exceeds the limit", 16),
        "photo_90_megapixels.jpg": ("ok (32, 32, 3)", 48),  # over Pillow's limit: read at 1/8 scale
        "photo_16_megapixels.jpg": ("ok (32, 32, 3)", 48),  # draft mode: far below the full 48 MB of pixels
        "gray16_25_megapixels.png": ("ok (32, 32, 3)", 120),  # resized before the 16-bit conversion
    }
    for name, (outcome, bound) in expected.items():
        growth, got = _decode_in_fresh_process(tmp_path / name)
        assert got.startswith(outcome) and growth <= bound, (name, growth, got)


def test_oversized_files_are_skipped_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(data_files, "MAX_FILE_BYTES", 4_000)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    files = {"small.png": _encode(Image.fromarray(two_group_images(1)[0][0]), "PNG")}
    files["large.png"] = _encode(Image.fromarray(noise), "PNG")
    assert len(files["small.png"]) < 4_000 < len(files["large.png"])
    (tmp_path / "folder").mkdir()
    with zipfile.ZipFile(tmp_path / "set.zip", "w") as zf:
        for name, data in files.items():
            (tmp_path / "folder" / name).write_bytes(data)
            zf.writestr(name, data)
    for source in ("folder", "set.zip"):
        data = load_images(tmp_path / source)
        assert [Path(p).name for p in data.paths] == ["small.png"]
        shown = str(tmp_path / source / "large.png") if source == "folder" else "large.png"
        assert data.skipped == [
            (shown, f"file of {len(files['large.png']):,} bytes exceeds the limit of 4,000 bytes")
        ]


# -- 3. inputs that cannot work: one clear line, exit 2, nothing written -------------------------


def _write_case(root: Path, case: str) -> Path:
    images = two_group_images(10)[0]
    if case in ("all_unreadable", "empty_folder"):
        (root / case).mkdir()
        if case == "all_unreadable":
            (root / case / "a.png").write_bytes(b"junk")
            (root / case / "b.jpg").write_bytes(b"")
        return root / case
    path = root / f"{case}.npz"
    arrays = {
        "float_images": images.astype(np.float32),
        "five_dims": images[None],
        "two_channels": images[..., :2],
        "no_images": images[:0],
        "ten_images": images,
    }
    if case == "not_a_zip":
        path.write_bytes(b"PK\x03\x04 truncated")
    else:
        np.savez(path, images=arrays[case])
    return path


@pytest.mark.parametrize(
    ("case", "extra", "message"),
    [
        (
            "all_unreadable",
            [],
            r"no readable images in .*2 files skipped, first: .*all_unreadable/a.png: not a readable image",
        ),
        ("empty_folder", [], r"no readable images in .*empty_folder \(it holds no image files\)"),
        ("float_images", [], r"'images' must be uint8, got float32"),
        (
            "five_dims",
            [],
            r"'images' must have shape \(N, H, W\) or \(N, H, W, C\).*got \(1, 10, 16, 16, 3\)",
        ),
        ("two_channels", [], r"with C in 1, 3, 4, got \(10, 16, 16, 2\)"),
        ("no_images", [], r"no readable images in .*no_images.npz"),
        ("not_a_zip", [], r"not_a_zip.npz is not a readable .npz file"),
        ("ten_images", ["--clusters", "11"], r"--clusters must be <= the number of images \(10\), got 11"),
        ("ten_images", ["--image-size", "12"], r"--image-size must be a positive multiple of 8 .* got 12"),
        ("ten_images", ["--image-size", "40", "--stem", "standard"], r"multiple of 32 .*'standard'.* got 40"),
    ],
)
def test_inputs_that_cannot_work_give_one_line_and_write_nothing(case, extra, message, tmp_path, capsys):
    source = _write_case(tmp_path, case)
    out = tmp_path / "out"
    assert main(["fit", str(source), "--out", str(out), "--epochs", "1", *TINY_ARGS, *extra]) == 2
    line = _error_line(capsys, alone=True)
    assert line.startswith("aegmm: error: ") and re.search(message, line), line
    assert not out.exists()


def test_a_failing_forced_run_leaves_the_old_run_unchanged(run_dir, tmp_path, capsys):
    old = tmp_path / "old_run"
    shutil.copytree(run_dir, old)
    before = _tree(old)
    source = _write_case(tmp_path, "ten_images")
    assert main(["fit", str(source), "--out", str(old), "--force", *TINY_ARGS, "--clusters", "30"]) == 2
    assert "--clusters must be <= the number of images (10), got 30" in _error_line(capsys)
    assert _tree(old) == before


# -- 4. interrupted training resumes to the weights of an uninterrupted run ----------------------

RESUMABLE_EPOCHS = 30
RESUMABLE_ARGS = ["--epochs", str(RESUMABLE_EPOCHS), "--batch-size", "32", "--seed", "3", "--noise", "0.05"]


@pytest.fixture(scope="module")
def long_run(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A data set that takes a few seconds to fit, and the weights of an uninterrupted fit."""
    root = tmp_path_factory.mktemp("interrupt")
    np.savez(root / "data.npz", images=two_group_images(128, seed=1)[0])
    args = ["fit", str(root / "data.npz"), "--out", str(root / "full"), *TINY_ARGS, *RESUMABLE_ARGS]
    assert main(args) == 0
    return root / "data.npz", load_file(root / "full" / "autoencoder.safetensors")


@pytest.mark.parametrize(
    ("sig", "code", "said"),
    [(signal.SIGTERM, 143, "stopped by SIGTERM"), (signal.SIGINT, 130, "interrupted")],
)
def test_interrupted_fit_resumes_to_the_weights_of_an_uninterrupted_run(long_run, tmp_path, sig, code, said):
    data, full = long_run
    out = tmp_path / "run"
    args = ["fit", str(data), "--out", str(out), *TINY_ARGS, *RESUMABLE_ARGS]
    process = subprocess.Popen(
        [sys.executable, "-m", "aegmm", *args],
        env=ONE_THREAD,
        stderr=subprocess.PIPE,
        text=True,
        # a shell's background job ignores SIGINT and its children inherit that: as a user's terminal, not
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not (out / "checkpoint" / META_FILE).exists() and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.01)
    assert process.poll() is None, "the fit ended before the test could interrupt it"
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    assert process.returncode == code, err
    hint = "'aegmm fit ... --resume' continues from the last complete epoch"
    assert err.strip().splitlines()[-1] == f"aegmm: {said}; {hint}" and "Traceback" not in err
    epoch = json.loads((out / "checkpoint" / META_FILE).read_text())["epoch"]
    assert 1 <= epoch < RESUMABLE_EPOCHS and not (out / "config.json").exists()
    assert not [p.name for p in (out / "checkpoint").iterdir() if p.name.endswith(".tmp")]

    assert main([*args, "--resume"]) == 0
    resumed = load_file(out / "autoencoder.safetensors")
    assert all(torch.allclose(resumed[k], full[k], atol=1e-6) for k in full)
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, RESUMABLE_EPOCHS + 1))


def test_a_write_that_fails_midway_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    write_json(path, {"epoch": 1})

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    for target in ("os.replace", "os.fsync"):
        with monkeypatch.context() as patch:
            patch.setattr(target, fail)
            with pytest.raises(OSError, match="No space left"):
                write_json(path, {"epoch": 2, "history": list(range(100_000))})
        assert json.loads(path.read_text()) == {"epoch": 1}
        assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left


def test_a_stop_between_checkpoint_files_still_resumes_exactly(images, tmp_path, monkeypatch):
    """The state file carries its own epoch: a stop before train_state.json is rewritten is harmless."""
    model = ModelConfig(image_size=16, channels=3, latent_dim=8, width=0.125)
    train = TrainConfig(epochs=3, batch_size=16, seed=0, device="cpu", noise=0.1)
    normalizer = Normalizer.fit(images)
    full, _ = train_autoencoder(images, model, train, normalizer, progress=False)

    def stop_on_second_epoch(path, value):
        if value["epoch"] == 2:
            raise KeyboardInterrupt  # after train_state.safetensors, before train_state.json
        write_json(path, value)

    monkeypatch.setattr(checkpoint, "write_json", stop_on_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_autoencoder(images, model, train, normalizer, checkpoint_dir=tmp_path, progress=False)
    assert json.loads((tmp_path / META_FILE).read_text())["epoch"] == 1  # the readable copy is stale
    monkeypatch.undo()
    resumed, history = train_autoencoder(
        images, model, train, normalizer, checkpoint_dir=tmp_path, resume=True, progress=False
    )
    assert [h["epoch"] for h in history] == [1, 2, 3]
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


def test_an_interrupted_assign_leaves_no_partial_table(run_dir, tmp_path, monkeypatch, capsys):
    def interrupt(self, data):
        raise KeyboardInterrupt

    monkeypatch.setattr(ImageClusterer, "assign", interrupt)
    table = tmp_path / "assigned.csv"
    assert (
        main(["assign", str(run_dir), str(run_dir.parent / "train.npz"), "--out", str(table), "--quiet"])
        == 130
    )
    assert _error_line(capsys) == "aegmm: interrupted"
    assert list(tmp_path.iterdir()) == []


# -- 5. numerical faults: divergence and degenerate latent vectors -------------------------------


def test_a_diverging_learning_rate_names_the_epoch_and_saves_no_model(tmp_path, capsys):
    np.savez(tmp_path / "data.npz", images=two_group_images(64)[0])
    out = tmp_path / "run"
    args = ["fit", str(tmp_path / "data.npz"), "--out", str(out), *TINY_ARGS, "--epochs", "3", "--lr", "1e6"]
    assert main(args) == 2
    line = _error_line(capsys)
    assert line.startswith("aegmm: error: training diverged") and "in epoch 1" in line
    assert not out.exists()  # it diverged before the first checkpoint: the folder is removed again


def test_divergence_keeps_the_last_good_checkpoint_unchanged(images, tmp_path, monkeypatch):
    model = ModelConfig(image_size=16, channels=3, latent_dim=8, width=0.125)
    normalizer = Normalizer.fit(images)

    def train(epochs, **kwargs):
        config = TrainConfig(epochs=epochs, batch_size=64, seed=0, device="cpu")
        return train_autoencoder(images, model, config, normalizer, progress=False, **kwargs)

    train(1, checkpoint_dir=tmp_path)
    good = (tmp_path / STATE_FILE).read_bytes()
    step = torch.optim.Adam.step

    def blow_up(self, *args, **kwargs):  # the first update of epoch 2 overflows a weight
        result = step(self, *args, **kwargs)
        self.param_groups[0]["params"][0].data.fill_(float("inf"))
        return result

    monkeypatch.setattr(torch.optim.Adam, "step", blow_up)
    with pytest.raises(FloatingPointError, match="diverged in epoch 2: .*the checkpoint of epoch 1 is kept"):
        train(3, checkpoint_dir=tmp_path, resume=True)
    assert (tmp_path / STATE_FILE).read_bytes() == good
    monkeypatch.undo()
    _, history = train(2, checkpoint_dir=tmp_path, resume=True)  # and it still resumes
    assert [h["epoch"] for h in history] == [1, 2]


@pytest.mark.parametrize(
    ("latents", "k", "message"),
    [
        (np.ones((30, 8)), 2, r"distinct latent vectors \(1\), got 2.*ask for at most 1"),
        (np.repeat(np.eye(8)[:3], 10, axis=0), 4, r"distinct latent vectors \(3\), got 4"),
        (np.repeat(np.eye(8)[:3], 10, axis=0), "auto", r"K in 5..8, but the images give only 3 distinct"),
        (np.full((30, 8), np.nan), 2, r"NaN or infinite values: the autoencoder diverged"),
    ],
)
def test_degenerate_latents_give_a_clear_error(latents, k, message):
    config = MixtureConfig(n_components=k, k_range=(5, 8), reduced_dim=4, n_init=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no LinAlgError, no RuntimeWarning on the way
        with pytest.raises(ValueError, match=message):
            LatentMixture(config).fit(latents)


def test_identical_latents_fit_one_cluster_without_warnings():
    for reducer in ("pca", "none"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            mixture = LatentMixture(MixtureConfig(n_components=1, reducer=reducer, n_init=1)).fit(
                np.ones((30, 8))
            )
        assert mixture.predict(np.ones((5, 8))).tolist() == [0] * 5


def test_identical_images_are_a_clear_error_and_one_cluster_reuses_the_trained_network(tmp_path, capsys):
    np.savez(tmp_path / "same.npz", images=np.repeat(two_group_images(1)[0], 24, axis=0))
    out = tmp_path / "run"
    args = ["fit", str(tmp_path / "same.npz"), "--out", str(out), *TINY_ARGS, "--epochs", "1"]
    assert main(args) == 2
    line = _error_line(capsys)
    assert "number of distinct latent vectors (1), got 2" in line
    assert (out / "checkpoint" / STATE_FILE).exists() and not (out / "config.json").exists()
    assert main([*args, "--resume", "--clusters", "1"]) == 0  # the documented fallback: K=1
    assert aegmm.load(out, progress=False).n_components_ == 1


# -- 6. untrusted model files: never unpickled, tampering refused --------------------------------


class _Payload:
    """Unpickling this creates the marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_the_pickle_payload_is_live(tmp_path):
    pickle.loads(pickle.dumps(_Payload(tmp_path / "marker")))  # what torch.load or joblib.load would do
    assert (tmp_path / "marker").exists()


@pytest.mark.parametrize("update_sha", [False, True])
def test_a_planted_pickle_is_refused_and_never_run(run_dir, tmp_path, update_sha, capsys):
    run, marker = tmp_path / "run", tmp_path / "marker"
    shutil.copytree(run_dir, run)
    payload = pickle.dumps(_Payload(marker))
    (run / "autoencoder.safetensors").write_bytes(payload)
    torch.save({"weights": _Payload(marker)}, run / "model.pt")
    (run / "model.pkl").write_bytes(payload)
    if update_sha:
        config = json.loads((run / "config.json").read_text())
        config["files"]["autoencoder.safetensors"] = hashlib.sha256(payload).hexdigest()
        (run / "config.json").write_text(json.dumps(config))
    expected = "is not a valid safetensors file" if update_sha else "sha256 does not match config.json"
    with pytest.raises(ValueError, match=expected):
        aegmm.load(run, progress=False)
    table = tmp_path / "assigned.csv"
    assert main(["assign", str(run), str(run_dir.parent / "train.npz"), "--out", str(table), "--quiet"]) == 2
    assert expected in _error_line(capsys)
    assert not marker.exists() and not table.exists()


def test_a_pickled_object_array_in_an_npz_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "marker"
    np.savez(tmp_path / "evil.npz", images=np.array([_Payload(marker)], dtype=object))
    with pytest.raises(ValueError, match="holds object arrays, which are refused"):
        load_images(tmp_path / "evil.npz")
    assert not marker.exists()


def _first_float(tensors: dict[str, torch.Tensor]) -> str:
    return next(k for k, v in tensors.items() if v.is_floating_point())


def _tamper(run: Path, name: str, change) -> None:
    """Change one model file and update its sha256, as an attacker would."""
    tensors = load_file(run / name)
    change(tensors)
    save_file(tensors, run / name)
    config = json.loads((run / "config.json").read_text())
    config["files"][name] = hashlib.sha256((run / name).read_bytes()).hexdigest()
    (run / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        (
            "autoencoder.safetensors",
            lambda t: t.update({_first_float(t): torch.zeros(3, 3)}),
            r"autoencoder.safetensors does not match the network in config.json \(.*size mismatch",
        ),
        (
            "autoencoder.safetensors",
            lambda t: t[_first_float(t)].fill_(float("nan")),
            "holds NaN or infinite weights",
        ),
        (
            "mixture.safetensors",
            lambda t: t.update({"gmm.means_": torch.zeros(2, 99, dtype=torch.float64)}),
            r"does not hold a valid mixture \(array 'gmm.means_' must be float with shape \(2, 4\)",
        ),
    ],
)
def test_tampered_model_files_are_a_clear_error(run_dir, tmp_path, name, change, message, capsys):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    _tamper(run, name, change)
    with pytest.raises(ValueError, match=message):
        aegmm.load(run, progress=False)
    assert (
        main(["assign", str(run), str(run_dir.parent / "train.npz"), "--out", str(tmp_path / "a.csv")]) == 2
    )
    assert re.search(message, _error_line(capsys))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(format_version=2), r"has model format version 2; this aegmm .* reads version 1"),
        (lambda c: c["model"].update(image_size="32"), r"config.json holds invalid settings"),
    ],
)
def test_a_wrong_format_version_or_settings_are_refused(run_dir, tmp_path, edit, message):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    config = json.loads((run / "config.json").read_text())
    edit(config)
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        aegmm.load(run, progress=False)
    (run / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="not valid JSON"):
        aegmm.load(run, progress=False)


# -- 7. paths: no silent overwrite, nothing written outside the output ---------------------------


def test_an_existing_run_is_replaced_only_with_force(run_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "notes.txt").write_text("mine")
    before = _tree(run)
    args = ["fit", str(run_dir.parent / "train.npz"), "--out", str(run), "--epochs", "1", *TINY_ARGS]
    assert main(args) == 2
    assert "already exists and is not empty; use --resume to continue it or --force" in _error_line(capsys)
    assert _tree(run) == before
    assert main([*args, "--force", "--seed", "1"]) == 0
    after = _tree(run)
    assert "notes.txt" not in after and after["config.json"] != before["config.json"]


def test_zip_members_are_never_extracted_anywhere(run_dir, tmp_path):
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    outside = tmp_path / "absolute.png"
    png = _encode(Image.fromarray(two_group_images(1)[0][0]), "PNG")
    archive = work / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(12):
            zf.writestr(f"ok/{i}.png", _encode(Image.fromarray(two_group_images(12)[0][i]), "PNG"))
        for name in ("../../escape.png", "ok/../../../../escape2.png", str(outside), "..\\..\\win.png"):
            zf.writestr(zipfile.ZipInfo(name), png)
    before = _tree(tmp_path)
    cwd = os.getcwd()
    os.chdir(work)
    try:
        assert main(["fit", "evil.zip", "--out", "run", "--epochs", "1", *TINY_ARGS]) == 0
        assert main(["assign", str(run_dir), "evil.zip", "--out", "assigned.csv", "--quiet"]) == 0
    finally:
        os.chdir(cwd)
    new = set(_tree(tmp_path)) - set(before)
    assert all(p.startswith(("a/b/c/run/", "a/b/c/assigned.csv")) for p in new), new
    assert not outside.exists()
    assert len(_rows(work / "assigned.csv")) == 16  # read in memory, whatever their names


# -- 8. fuzzing: random bytes and random arrays only ever give images or the documented errors ---

MAGIC = [
    b"",
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ",
]
VALID = [
    _encode(Image.new(mode, (9, 6), 77), fmt)
    for mode, fmt in [
        ("RGB", "PNG"),
        ("RGB", "JPEG"),
        ("P", "GIF"),
        ("RGB", "BMP"),
        ("I;16", "TIFF"),
        ("RGB", "WEBP"),
    ]
]
BYTES = st.one_of(
    st.binary(max_size=200),
    st.tuples(st.sampled_from(MAGIC), st.binary(max_size=300)).map(lambda t: t[0] + t[1]),
    st.tuples(st.sampled_from(VALID), st.integers(0, 400), st.binary(max_size=40)).map(
        lambda t: t[0][: t[1]] + t[2]  # a valid image cut short, then random bytes
    ),
    st.tuples(st.sampled_from(VALID), st.integers(0, 300), st.integers(0, 255)).map(
        lambda t: t[0][: t[1]] + bytes([t[2]]) + t[0][t[1] + 1 :]  # one byte changed
    ),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=BYTES, size=st.sampled_from([None, 8, 16]), channels=st.sampled_from([None, 1, 3]))
def test_decode_image_returns_an_image_or_a_decode_error(data, size, channels):
    try:
        image = decode_image(data, size, channels)
    except DecodeError as exc:
        assert str(exc)
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] in (1, 3)
    assert size is None or image.shape[:2] == (size, size)
    assert channels is None or image.shape[2] == channels


DTYPES = ["bool", "int8", "uint16", "int64", "float16", "float64", "complex64", "U3", "S2", "datetime64[s]"]


def _array(spec: tuple) -> np.ndarray:
    dtype, shape, seed = spec
    values = np.random.default_rng(seed).integers(0, 256, size=shape)
    if dtype == "object":
        return np.array(values.tolist() if shape else 1, dtype=object)
    return values.astype(dtype)


ARRAYS = st.tuples(
    st.sampled_from(["uint8"] * 4 + ["object", *DTYPES]),
    st.one_of(
        st.lists(st.integers(0, 5), max_size=5),  # any rank, 0-size included
        st.tuples(st.integers(0, 4), st.integers(1, 9), st.integers(1, 9), st.sampled_from([1, 2, 3, 4])),
    ).map(tuple),
    st.integers(0, 2**32 - 1),
).map(_array)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    images=ARRAYS,
    labels=st.one_of(st.none(), ARRAYS),
    size=st.sampled_from([None, 8]),
    channels=st.sampled_from([None, 1, 3]),
)
def test_load_images_returns_images_or_a_clear_error_for_any_npz(
    tmp_path_factory, images, labels, size, channels
):
    path = tmp_path_factory.mktemp("npz") / "random.npz"
    np.savez(path, images=images, **({} if labels is None else {"labels": labels}))
    try:
        data = load_images(path, image_size=size, channels=channels)
    except (ValueError, TypeError) as exc:
        assert str(exc) and "Traceback" not in str(exc)
        return
    assert data.images.dtype == np.uint8 and data.images.ndim == 4 and len(data) == len(images)
    assert size is None or data.images.shape[1:3] == (size, size)
    assert channels is None or data.images.shape[3] == channels
