import csv
import re

import numpy as np
import pytest
from PIL import Image

from aegmm.cli import build_parser, main
from aegmm.config import MixtureConfig, ModelConfig, TrainConfig
from conftest import TINY_ARGS, two_group_images


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    images, labels = two_group_images(40)
    np.savez(root / "train.npz", images=images, labels=labels)
    assert main(["fit", str(root / "train.npz"), "--out", str(root / "run"), *TINY_ARGS]) == 0
    return root / "run"


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_fit_writes_model_files_and_assignments(run_dir):
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.json", "autoencoder.safetensors", "mixture.safetensors", "assignments.csv"} <= names
    rows = _rows(run_dir / "assignments.csv")
    assert len(rows) == 40
    assert list(rows[0]) == ["path", "cluster", "probability", "log_likelihood", "skipped"]
    assert {r["cluster"] for r in rows} <= {"0", "1"}


def test_assign_writes_a_row_per_image_and_the_reason_for_skipped_ones(run_dir, tmp_path, capsys):
    folder = tmp_path / "new"
    folder.mkdir()
    images, _ = two_group_images(6, seed=5)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"ñew {i}.png")
    (folder / "broken.jpg").write_bytes(b"not really a jpeg")
    out = tmp_path / "assigned.csv"
    assert main(["assign", str(run_dir), str(folder), "--out", str(out), "--quiet"]) == 0
    rows = _rows(out)
    assert len(rows) == 7
    assert all(r["path"].startswith(str(folder / "")) for r in rows)  # one convention for every row
    broken = [r for r in rows if r["path"] == str(folder / "broken.jpg")][0]
    assert broken["cluster"] == "" and "not a readable image" in broken["skipped"]
    assert "skipped 1 file" in capsys.readouterr().err


def test_assign_matches_fit_assignments_for_the_training_images(run_dir, tmp_path):
    out = tmp_path / "again.csv"
    assert (
        main(["assign", str(run_dir), str(run_dir.parent / "train.npz"), "--out", str(out), "--quiet"]) == 0
    )
    again = [r["cluster"] for r in _rows(out)]
    assert again == [r["cluster"] for r in _rows(run_dir / "assignments.csv")]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fit", "missing_dir", "--out", "OUT"], "input not found: missing_dir"),
        (
            ["fit", "builtin:digits", "--out", "OUT", "--image-size", "12"],
            "--image-size must be a positive multiple of 8",
        ),
        (["assign", "nowhere", "builtin:digits", "--out", "x.csv"], "nowhere is not an aegmm run"),
        (["fit", "builtin:digits", "--out", "OUT", "--lr", "-1"], "lr must be a finite number > 0, got -1.0"),
    ],
)
def test_errors_are_one_readable_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aegmm: error: ") and message in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "OUT").exists()


def test_existing_run_is_not_overwritten_without_force(run_dir, capsys):
    assert main(["fit", "builtin:digits", "--out", str(run_dir), "--quiet"]) == 2
    assert "use --resume to continue it or --force to replace it" in capsys.readouterr().err


def test_bad_cluster_count_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "builtin:digits", "--out", "x", "--clusters", "many"])
    assert exit_info.value.code == 2
    assert (
        capsys.readouterr().err
        == "aegmm: error: --clusters must be a whole number >= 1 or 'auto', got 'many'\n"
    )


def _verbs() -> dict:
    return build_parser()._subparsers._group_actions[0].choices


@pytest.mark.parametrize("verb", ["fit", "assign", "evaluate", "pack", "demo"])
def test_the_rendered_help_of_every_verb_describes_every_option(verb):
    parser = _verbs()[verb]
    text = parser.format_help()
    fields = re.findall(r"\{[^{}]*\}", text)  # argparse shows choices as {a,b,c}; anything else is an
    assert all(re.fullmatch(r"\{[\w-]+(,[\w-]+)+\}", f) for f in fields), fields  # f-string left unformatted
    for action in parser._actions:
        assert action.help and all(option in text for option in action.option_strings), action.dest


def test_fit_help_states_the_defaults_of_the_config_dataclasses():
    actions = {a.option_strings[0]: a for a in _verbs()["fit"]._actions if a.option_strings}
    for option, default in [
        ("--clusters", MixtureConfig.n_components),
        ("--epochs", TrainConfig.epochs),
        ("--image-size", ModelConfig.image_size),
        ("--latent-dim", ModelConfig.latent_dim),
        ("--reduced-dim", MixtureConfig.reduced_dim),
        ("--width", ModelConfig.width),
    ]:
        assert actions[option].default == default
        assert f"default {default})" in actions[option].help, (option, actions[option].help)
    assert (
        f"(default {TrainConfig.batch_size})" in actions["--batch-size"].help
    )  # shared: given before or after


def test_streamed_assignment_in_small_chunks_equals_one_pass(run_dir, tmp_path, image_folder):
    import aegmm
    from aegmm.runs import assign_to_csv, load_for, write_assignments

    (image_folder / "dark" / "zero.png").write_bytes(b"")
    clusterer = aegmm.load(run_dir, progress=False)
    counts, skipped = assign_to_csv(clusterer, image_folder, tmp_path / "chunked.csv", chunk=5)
    write_assignments(tmp_path / "whole.csv", clusterer.assign(load_for(clusterer, image_folder)))
    chunked, whole = _rows(tmp_path / "chunked.csv"), _rows(tmp_path / "whole.csv")
    key = lambda r: r["path"]  # noqa: E731
    assert sorted(chunked, key=key) == sorted(whole, key=key)
    assert counts.sum() == 24 and [p for p, _ in skipped] == [str(image_folder / "dark" / "zero.png")]


def test_threads_limits_torch_and_blas_threads(run_dir, tmp_path, capsys):
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    before = torch.get_num_threads()
    with threadpool_limits(limits=None):  # restores the BLAS pools afterwards
        try:
            out = tmp_path / "a.csv"
            assert (
                main(
                    ["--threads", "2", "assign", str(run_dir), "builtin:digits", "--out", str(out), "--quiet"]
                )
                == 0
            )
            assert torch.get_num_threads() == 2
            assert all(pool["num_threads"] <= 2 for pool in threadpool_info())
        finally:
            torch.set_num_threads(before)
    with pytest.raises(SystemExit):
        main(["--threads", "0", "demo"])
    assert capsys.readouterr().err == "aegmm: error: --threads must be >= 1, got 0\n"
