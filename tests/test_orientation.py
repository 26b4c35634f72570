"""Which domain is the positive class of the AUROCs: decided by names, never by sort order."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from aegmm import ImageClusterer, load_images
from aegmm.cli import main
from aegmm.evaluation.domains import positive_domain
from aegmm.evaluation.evaluate import evaluate_run

PER_DOMAIN = 60  # CIFAKE images per domain in the layout test


@pytest.mark.parametrize(
    "names, positive, rule",
    [
        (["FAKE", "REAL"], "FAKE", "name"),
        (["REAL", "FAKE"], "FAKE", "name"),
        (["real", "simulated"], "simulated", "name"),
        (["camera photos", "SD-1.5 outputs"], "SD-1.5 outputs", "name"),
        (["ai_generated", "natural"], "ai_generated", "name"),
        (["raised", "said"], "said", "fallback"),  # "ai" inside a word is not the word AI
        (["cats", "dogs", "birds"], "dogs", "fallback"),
        (["gan", "diffusion", "real"], "real", "fallback"),  # two generated domains: nothing decides
    ],
)
def test_the_positive_domain_comes_from_the_names(names, positive, rule):
    orientation = positive_domain(names)
    assert names[orientation.positive] == positive and orientation.rule == rule
    if rule == "fallback":
        assert "choose with --positive NAME" in orientation.reason


def test_a_requested_positive_domain_wins_and_must_exist():
    orientation = positive_domain(["FAKE", "REAL"], "real")
    assert orientation.positive == 1 and orientation.rule == "requested"
    with pytest.raises(
        ValueError, match=r"--positive must name one of the domains \(FAKE, REAL\), got 'fak'"
    ):
        positive_domain(["FAKE", "REAL"], "fak")


@pytest.fixture(scope="module")
def cifake_layouts(shared_data, tmp_path_factory) -> dict[str, Path]:
    """The same CIFAKE images as a folder (train/REAL, train/FAKE), a zip, and an npz whose
    label order is REAL, FAKE (the folder and the zip sort FAKE first)."""
    root = tmp_path_factory.mktemp("cifake")
    with zipfile.ZipFile(shared_data / "cifake_train_20k.zip") as archive:
        members = sorted(m for m in archive.namelist() if m.endswith(".jpg"))
        chosen = []
        for domain in ("REAL", "FAKE"):  # an even spread over each domain's CIFAR classes
            inside = [m for m in members if m.split("/")[1] == domain]
            chosen += inside[:: len(inside) // PER_DOMAIN][:PER_DOMAIN]
        with zipfile.ZipFile(root / "cifake.zip", "w") as small:
            for member in chosen:
                data = archive.read(member)
                (root / member).parent.mkdir(parents=True, exist_ok=True)
                (root / member).write_bytes(data)
                small.writestr(member, data)
    folder = load_images(root / "train")
    assert folder.label_names == ["FAKE", "REAL"]  # sorted: FAKE would be domain 0
    np.savez(
        root / "cifake.npz", images=folder.images, labels=1 - folder.labels, label_names=["REAL", "FAKE"]
    )
    run = root / "run"
    tiny = dict(width=0.125, latent_dim=8, epochs=1, batch_size=32, n_components=2, n_init=1, reduced_dim=4)
    ImageClusterer(**tiny, progress=False).fit(root / "cifake.npz").save(run)
    return {"run": run, "folder": root / "train", "zip": root / "cifake.zip", "npz": root / "cifake.npz"}


@pytest.fixture(scope="module")
def evaluated(cifake_layouts, tmp_path_factory) -> dict[str, tuple[dict, str]]:
    out = {}
    for layout in ("folder", "zip", "npz"):
        report = tmp_path_factory.mktemp(layout) / "report"
        evaluate_run(cifake_layouts["run"], cifake_layouts[layout], report, progress=False)
        metrics = json.loads((report / "metrics.json").read_text())
        out[layout] = (metrics["domains"], (report / "report.html").read_text())
    return out


def test_every_layout_takes_fake_as_positive_and_fits_the_one_class_mixture_on_real(evaluated):
    for domains, html in evaluated.values():
        assert (domains["positive"], domains["negative"], domains["positive_rule"]) == (
            "FAKE",
            "REAL",
            "name",
        )
        assert domains["one_class"]["fit_domain"] == "REAL"
        assert domains["one_class"]["n_fit"] == PER_DOMAIN // 2
        assert "positive class FAKE (vs REAL)" in html


def test_every_layout_gives_the_same_aurocs_and_high_frequency_finds_fake(evaluated):
    reference = evaluated["npz"][0]
    keys = ("auroc_nll", "auroc_one_class")
    for domains, _ in evaluated.values():
        assert [domains[k] for k in keys] == pytest.approx([reference[k] for k in keys], abs=1e-12)
        assert domains["auroc_scores"] == pytest.approx(reference["auroc_scores"], abs=1e-12)
        assert domains["auroc_scores"]["high_frequency"] > 0.7


def test_positive_can_be_named_and_a_wrong_name_is_one_line(cifake_layouts, tmp_path, capsys):
    run, folder = str(cifake_layouts["run"]), str(cifake_layouts["folder"])
    flipped = tmp_path / "flipped"
    evaluate_run(cifake_layouts["run"], cifake_layouts["folder"], flipped, progress=False, positive="real")
    domains = json.loads((flipped / "metrics.json").read_text())["domains"]
    assert (domains["positive"], domains["positive_rule"]) == ("REAL", "requested")
    assert domains["auroc_scores"]["high_frequency"] < 0.3
    html = (flipped / "report.html").read_text()
    assert "below 0.5 because REAL images carry less high-frequency energy than FAKE images" in html
    assert main(["evaluate", run, folder, "--out", str(tmp_path / "x"), "--positive", "cats", "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == (
        "aegmm: error: --positive must name one of the domains (FAKE, REAL), got 'cats'"
    )
    assert not (tmp_path / "x").exists()
