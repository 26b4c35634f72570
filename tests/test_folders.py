"""Nothing is deleted or overwritten that aegmm did not write: --force, --out and the inputs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aegmm.cli import main
from aegmm.folders import MARKER, is_marked
from conftest import TINY_ARGS, two_group_images


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aegmm: error: "), lines
    return lines[0]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, Path]:
    """A folder of 24 PNG images in two labelled subfolders, and a run fitted on it."""
    root = tmp_path_factory.mktemp("folders")
    images = root / "photos"
    for i, (img, label) in enumerate(zip(*two_group_images(24))):
        folder = images / ("dark" if label == 0 else "bright")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i:02d}.png")
    assert main(["fit", str(images), "--out", str(root / "run"), *TINY_ARGS]) == 0
    return {"root": root, "images": images, "run": root / "run"}


@pytest.fixture
def unchanged(workspace):
    """Asserts after the test that neither the images nor the run changed."""
    before = {name: _tree(workspace[name]) for name in ("images", "run")}
    yield workspace
    assert {name: _tree(workspace[name]) for name in ("images", "run")} == before


def test_a_fitted_run_carries_the_marker(workspace):
    assert is_marked(workspace["run"]) and (workspace["run"] / MARKER).is_file()


@pytest.mark.parametrize(
    "where, conflict",
    [("images", "is the input itself"), ("root", "contains the input"), ("inside", "lies inside the input")],
)
def test_fit_never_writes_over_or_into_its_input_folder(unchanged, where, conflict, capsys):
    out = {"images": unchanged["images"], "root": unchanged["root"], "inside": unchanged["images"] / "dark"}
    args = ["fit", str(unchanged["images"]), "--out", str(out[where]), *TINY_ARGS]
    assert main([*args, "--force"]) == 2
    assert f"{conflict} {unchanged['images']}" in _error(capsys)


def test_fit_never_replaces_the_folder_holding_an_input_file(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / MARKER).write_text('{"created_by": "aegmm"}')  # even a marked folder
    np.savez(data / "train.npz", images=two_group_images(24)[0])
    before = _tree(data)
    assert main(["fit", str(data / "train.npz"), "--out", str(data), "--force", *TINY_ARGS]) == 2
    assert "contains the input" in _error(capsys)
    assert _tree(data) == before


@pytest.mark.parametrize("where", ["run", "inside_run", "images", "inside_images", "root"])
def test_evaluate_never_writes_over_or_into_the_run_or_the_data(unchanged, where, capsys):
    run, images = unchanged["run"], unchanged["images"]
    out = {
        "run": run,
        "inside_run": run / "report",
        "images": images,
        "inside_images": images / "report",
        "root": unchanged["root"],
    }[where]
    assert main(["evaluate", str(run), str(images), "--out", str(out), "--force", "--quiet"]) == 2
    line = _error(capsys)
    assert line.startswith(f"aegmm: error: --out {out} ") and "choose a path outside" in line
    assert not (run / "report").exists() and not (images / "report").exists()


def test_force_refuses_a_folder_aegmm_did_not_create(unchanged, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    assert main(["fit", str(unchanged["images"]), "--out", str(mine), "--force", *TINY_ARGS]) == 2
    assert f"--force replaces only folders aegmm created, but {mine} has no {MARKER} marker" in _error(capsys)
    evaluate = ["evaluate", str(unchanged["run"]), str(unchanged["images"]), "--out", str(mine)]
    assert main([*evaluate, "--force"]) == 2
    assert "--force replaces only folders aegmm created" in _error(capsys)
    assert (mine / "thesis.tex").read_text() == "years of work" and len(list(mine.iterdir())) == 1


def test_force_replaces_a_folder_aegmm_created_and_fills_an_empty_one(unchanged, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["fit", str(unchanged["images"]), "--out", str(empty), *TINY_ARGS]) == 0
    assert is_marked(empty)
    (empty / "scratch.txt").write_text("written into a run folder")
    assert main(["fit", str(unchanged["images"]), "--out", str(empty), "--force", *TINY_ARGS]) == 0
    assert is_marked(empty) and not (empty / "scratch.txt").exists() and (empty / "config.json").is_file()


def test_without_force_evaluate_suggests_only_force(unchanged, tmp_path, capsys):
    report = tmp_path / "report"
    report.mkdir()
    (report / "x").write_text("x")
    assert main(["evaluate", str(unchanged["run"]), str(unchanged["images"]), "--out", str(report)]) == 2
    line = _error(capsys)
    assert line.endswith("already exists and is not empty; use --force to replace it")
    assert "--resume" not in line


def test_assign_writes_no_csv_or_gallery_over_a_file_it_did_not_write(unchanged, tmp_path, capsys):
    run, images = str(unchanged["run"]), str(unchanged["images"])
    notes = tmp_path / "notes.csv"
    notes.write_text("my,own,table\n")
    photo = tmp_path / "photo.png"
    Image.new("RGB", (4, 4), "red").save(photo)
    assert main(["assign", run, images, "--out", str(notes), "--quiet"]) == 2
    assert f"--out {notes} already exists and was not written by aegmm" in _error(capsys)
    out = tmp_path / "a.csv"
    assert main(["assign", run, images, "--out", str(out), "--gallery", str(photo), "--quiet"]) == 2
    assert f"--gallery {photo} already exists and was not written by aegmm" in _error(capsys)
    assert notes.read_text() == "my,own,table\n" and not out.exists()
    assert Image.open(photo).getpixel((0, 0)) == (255, 0, 0)


def test_assign_replaces_its_own_csv_and_gallery(unchanged, tmp_path):
    run, images = str(unchanged["run"]), str(unchanged["images"])
    out, gallery = tmp_path / "a.csv", tmp_path / "g.png"
    for _ in range(2):
        assert main(["assign", run, images, "--out", str(out), "--gallery", str(gallery), "--quiet"]) == 0
    assert out.read_text().startswith("path,cluster,") and gallery.stat().st_size > 0


@pytest.mark.parametrize("flag", ["--out", "--gallery"])
def test_assign_writes_nothing_into_the_data_or_the_run(unchanged, tmp_path, flag, capsys):
    for folder in (unchanged["images"], unchanged["run"]):
        target = folder / ("a.csv" if flag == "--out" else "g.png")
        extra = ["--out", str(tmp_path / "a.csv")] if flag == "--gallery" else []
        args = ["assign", str(unchanged["run"]), str(unchanged["images"]), flag, str(target), *extra]
        assert main([*args, "--quiet"]) == 2
        assert f"{flag} {target} lies inside the input {folder}" in _error(capsys)


def test_pack_replaces_only_its_own_npy(unchanged, tmp_path, capsys):
    images = str(unchanged["images"])
    theirs = tmp_path / "theirs.npy"
    np.save(theirs, np.arange(10))
    assert main(["pack", images, "--out", str(theirs), "--image-size", "16", "--quiet"]) == 2
    assert f"--out {theirs} already exists and was not written by aegmm" in _error(capsys)
    assert np.array_equal(np.load(theirs), np.arange(10))
    ours = tmp_path / "ours.npy"
    for _ in range(2):
        assert main(["pack", images, "--out", str(ours), "--image-size", "16", "--quiet"]) == 0
    assert np.load(ours).shape == (24, 16, 16, 3)
    assert main(["pack", images, "--out", str(unchanged["images"] / "x.npy"), "--image-size", "16"]) == 2
    assert "lies inside the input" in _error(capsys)
