"""`aegmm assign` outputs (--gallery, --export, --latents) and the command line's manners."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import aegmm
from aegmm.cli import main
from aegmm.exports import OUTLIER_QUANTILE, GalleryPicks
from conftest import TINY_ARGS, two_group_images


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> dict[str, Path]:
    """A run fitted on a labelled folder (dark/, bright/), and a second folder to assign."""
    root = tmp_path_factory.mktemp("assign")
    for name, seed in (("train", 0), ("new", 3)):
        for i, (img, label) in enumerate(zip(*two_group_images(30, seed=seed))):
            folder = root / name / ("dark" if label == 0 else "bright")
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{i:02d}.png")
    (root / "new" / "dark" / "broken.png").write_bytes(b"not a png")
    assert main(["fit", str(root / "train"), "--out", str(root / "run"), *TINY_ARGS]) == 0
    return {"root": root, "run": root / "run", "new": root / "new"}


def test_gallery_picks_across_chunks_equal_one_pass():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (200, 4, 4, 1), dtype=np.uint8)
    clusters, values = rng.integers(0, 3, 200), rng.normal(size=200)
    whole, chunked = GalleryPicks(3), GalleryPicks(3)
    whole.add(images, clusters, values)
    for start in range(0, 200, 17):
        chunked.add(images[start : start + 17], clusters[start : start + 17], values[start : start + 17])
    for c in range(3):
        members = np.flatnonzero(clusters == c)
        order = members[np.argsort(-values[members])]
        expected = np.sort(np.concatenate([values[order[:8]], values[order[8:][-3:]]]))
        assert np.array_equal(np.sort(chunked.values[c]), expected)
        assert np.array_equal(np.sort(whole.values[c]), expected)


@pytest.mark.parametrize(
    "suffix, magic", [(".png", b"\x89PNG"), (".jpg", b"\xff\xd8\xff"), (".webp", b"RIFF")]
)
def test_gallery_format_follows_the_extension_and_groups_by_cluster(fitted, tmp_path, suffix, magic, capsys):
    gallery = tmp_path / f"g{suffix}"
    args = ["assign", str(fitted["run"]), str(fitted["new"]), "--out", str(tmp_path / "a.csv"), "--quiet"]
    assert main([*args, "--gallery", str(gallery)]) == 0
    assert gallery.read_bytes().startswith(magic)
    assert main([*args, "--gallery", str(gallery)]) == 0  # its own earlier gallery may be replaced
    assert "gallery written to" in capsys.readouterr().out
    with Image.open(gallery) as picture:
        width, height = picture.size
    assert height < width  # one row per cluster (K=2), not a grid of 60 images


def test_a_gallery_of_an_unknown_format_is_refused_before_any_work(fitted, tmp_path, capsys):
    out = tmp_path / "a.csv"
    args = ["assign", str(fitted["run"]), str(fitted["new"]), "--out", str(out), "--gallery", "g.gif"]
    assert main(args) == 2
    assert (
        capsys.readouterr().err
        == "aegmm: error: --gallery must end in .png, .jpg, .jpeg or .webp, got 'g.gif'\n"
    )
    assert not out.exists()


@pytest.mark.parametrize("how", ["--link", "--copy"])
def test_export_sorts_images_into_one_folder_per_cluster_and_the_outliers(fitted, tmp_path, how):
    out, export = tmp_path / "a.csv", tmp_path / "sorted"
    args = ["assign", str(fitted["run"]), str(fitted["new"]), "--out", str(out), "--export", str(export), how]
    assert main([*args, "--quiet"]) == 0
    rows = [r for r in _rows(out) if r["cluster"]]
    clusters = sorted(p for p in export.iterdir() if p.name.startswith("cluster_"))
    assert len(clusters) == len({r["cluster"] for r in rows})
    assert all(p.name.endswith(("_dark", "_bright")) for p in clusters)  # named after the dominant label
    for folder in clusters:
        k = int(folder.name.split("_")[1])
        sources = {Path(r["path"]).name: Path(r["path"]) for r in rows if r["cluster"] == str(k)}
        files = list(folder.iterdir())
        assert sorted(p.name for p in files) == sorted(sources)
        assert all(p.is_symlink() == (how == "--link") for p in files)
        assert all(p.read_bytes() == sources[p.name].read_bytes() for p in files)
    training = [float(r["log_likelihood"]) for r in _rows(fitted["run"] / "assignments.csv")]
    threshold = np.quantile(training, OUTLIER_QUANTILE)
    expected = sorted(Path(r["path"]).name for r in rows if float(r["log_likelihood"]) < threshold)
    outliers = (
        sorted(p.name for p in (export / "outliers").iterdir()) if (export / "outliers").exists() else []
    )
    assert outliers == expected
    assert f"{OUTLIER_QUANTILE:.0%} quantile" in (export / "README.txt").read_text()


def test_export_never_replaces_a_folder_aegmm_did_not_write(fitted, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    args = [
        "assign",
        str(fitted["run"]),
        str(fitted["new"]),
        "--out",
        str(tmp_path / "a.csv"),
        "--export",
        str(mine),
    ]
    assert main(args) == 2
    assert (
        f"--export {mine} already exists and is not empty; choose another folder" in capsys.readouterr().err
    )
    assert [p.name for p in mine.iterdir()] == ["keep.txt"] and not (tmp_path / "a.csv").exists()


def test_export_of_an_npz_writes_copies_and_refuses_links(fitted, tmp_path, capsys):
    images, labels = two_group_images(12, seed=4)
    npz = tmp_path / "new.npz"
    np.savez(npz, images=images, labels=labels, label_names=["dark", "bright"])
    run, out = str(fitted["run"]), str(tmp_path / "a.csv")
    assert main(["assign", run, str(npz), "--out", out, "--export", str(tmp_path / "x"), "--link"]) == 2
    assert "--link needs a folder of image files" in capsys.readouterr().err
    assert main(["assign", run, str(npz), "--out", out, "--export", str(tmp_path / "y"), "--quiet"]) == 0
    written = sorted((tmp_path / "y").glob("cluster_*/*.png"))
    assert len(written) == 12 and np.asarray(Image.open(written[0])).shape == (16, 16, 3)
    assert main(["assign", run, str(npz), "--out", out, "--copy"]) == 2
    assert "add --export DIR" in capsys.readouterr().err


def test_latents_follow_the_csv_rows_with_nan_for_skipped_files(fitted, tmp_path):
    out, latents = tmp_path / "a.csv", tmp_path / "z.npy"
    assert (
        main(["assign", str(fitted["run"]), str(fitted["new"]), "--out", str(out), "--latents", str(latents)])
        == 0
    )
    rows, vectors = _rows(out), np.load(latents)
    assert vectors.shape == (len(rows), 8)
    clusterer = aegmm.load(fitted["run"], progress=False)
    good = [i for i, r in enumerate(rows) if r["cluster"]]
    pictures = np.stack([np.asarray(Image.open(rows[i]["path"])) for i in good])
    np.testing.assert_allclose(vectors[good], clusterer.transform(pictures), rtol=1e-5, atol=1e-5)
    skipped = [i for i, r in enumerate(rows) if not r["cluster"]]
    assert len(skipped) == 1 and np.isnan(vectors[skipped]).all()
    assert (
        main(["assign", str(fitted["run"]), str(fitted["new"]), "--out", str(out), "--latents", str(out)])
        == 2
    )


def test_k_range_bounds_the_automatic_choice(fitted, tmp_path, capsys):
    out = tmp_path / "auto"
    args = ["fit", str(fitted["root"] / "train"), "--out", str(out), *TINY_ARGS, "--clusters", "auto"]
    assert main([*args, "--k-range", "3", "4"]) == 0
    run = aegmm.load(out, progress=False)
    assert sorted(run.mixture_.bic_curve_) == [3, 4] and run.n_components_ in (3, 4)
    assert main(["fit", "x", "--out", str(tmp_path / "b"), "--k-range", "3", "4"]) == 2
    assert "--k-range needs --clusters auto" in capsys.readouterr().err


def test_shared_options_go_before_or_after_the_verb(fitted, tmp_path):
    for order in (["--quiet", "--threads", "1", "assign"], ["assign", "--quiet", "--threads", "1"]):
        argv = [
            *order,
            str(fitted["run"]),
            str(fitted["new"]),
            "--out",
            str(tmp_path / "a.csv"),
            "--device",
            "cpu",
        ]
        assert main(argv) == 0


def _aegmm(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aegmm", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_quiet_prints_only_the_final_lines_and_logs_have_no_carriage_returns(fitted, tmp_path):
    train, quiet, loud = str(fitted["root"] / "train"), tmp_path / "quiet", tmp_path / "loud"
    done = _aegmm("fit", train, "--out", str(quiet), *TINY_ARGS, "--threads", "1", cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.splitlines()[0].startswith("fitted K=2 clusters on 30 images")
    loud_args = [a for a in TINY_ARGS if a != "--quiet"]
    done = _aegmm(
        "fit", train, "--out", str(loud), *loud_args, "--epochs", "2", "--threads", "1", cwd=tmp_path
    )
    assert done.returncode == 0 and "\r" not in done.stderr  # stderr is a pipe here, as in a log file
    lines = done.stderr.splitlines()
    assert lines[0] == f"loaded 30 images from {train}"
    assert [line.split(":")[0] for line in lines if line.startswith("epoch")] == ["epoch 1/2", "epoch 2/2"]
    assert all("validation loss" in line for line in lines if line.startswith("epoch"))
    assert any(line.startswith("fitting the Gaussian mixture (K=2)") for line in lines)


def test_version_and_a_help_that_needs_no_torch(tmp_path):
    done = _aegmm("--version", cwd=tmp_path)
    assert done.stdout.strip() == f"aegmm {aegmm.__version__}" and aegmm.__version__ != "unknown"
    probe = "import sys, aegmm.cli\naegmm.cli.build_parser()\n"
    probe += "print('torch' in sys.modules, 'sklearn' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["False", "False"]  # --help answers without importing either
