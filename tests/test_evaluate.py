"""Tests of `aegmm evaluate` (aegmm.evaluation.evaluate) and the assignment gallery."""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from aegmm import ImageClusterer, ImageSet, load, load_images
from aegmm.evaluation import evaluate as evaluate_module
from aegmm.evaluation import image_scores
from aegmm.evaluation.evaluate import evaluate_run
from aegmm.evaluation.plots import loss_history, new_axes
from aegmm.evaluation.schema import schema
from aegmm.folders import prepare_output
from aegmm.preprocess import conform_images

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVIL = '<b class="x">zero</b>'  # a label name that must be escaped in the report

REQUIRED = [
    "schema_version",
    "members",
    "n_images",
    "reconstruction_mse",
    "psnr",
    "gmm.log_likelihood",
    "gmm.bic",
    "gmm.aic",
    "gmm.cv_loglik",
    "gmm.bic_seeds.mean",
    "gmm.bic_seeds.std",
    "kmeans.bic",
    "kmeans.aic",
    "kmeans.cv_loglik",
]
LABEL_KEYS = [
    "labels.acc",
    "labels.nmi",
    "labels.ari",
    "labels.purity",
    "kmeans_latent.acc",
    "kmeans_pixels.acc",
]
DOMAIN_KEYS = [
    "domains.names",
    "domains.kl",
    "domains.auroc_nll",
    "domains.auroc_one_class",
    "domains.auroc_scores.high_frequency",
    "domains.auroc_scores.reconstruction",
]


def _get(metrics: dict, key: str):
    for part in key.split("."):
        metrics = metrics[part]
    return metrics


def _leaves(metrics: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in metrics.items():
        path = f"{prefix}{key}"
        keys |= _leaves(value, f"{path}.") if isinstance(value, dict) else {path}
    return keys


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run far faster on one thread than on threads contending for 2 busy cores."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def digits() -> ImageSet:
    """240 8x8 digits from both domains (real, simulated), labels 0-9, one label name needing escaping."""
    data = load_images("builtin:digits+simulated", image_size=8)
    index = np.sort(np.random.default_rng(0).choice(len(data), 240, replace=False))
    subset = data.subset(index)
    subset.label_names = [EVIL, *subset.label_names[1:]]
    subset.source = 'digits <&> "subset"'
    return subset


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, digits) -> Path:
    small = dict(image_size=8, width=0.125, latent_dim=8, epochs=1, n_components=3, candidates=2)
    clusterer = ImageClusterer(**small, normalize="both", progress=False).fit(digits)  # two per scaling
    return clusterer.save(tmp_path_factory.mktemp("run") / "run")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, run_dir, digits) -> tuple[Path, dict, str]:
    out = tmp_path_factory.mktemp("evaluation") / "out"
    report = evaluate_run(run_dir, digits, out, progress=False)
    assert report == out / "report.html"
    return out, json.loads((out / "metrics.json").read_text()), report.read_text()


def test_metrics_json_has_every_key_with_finite_numbers(evaluated, digits):
    _, metrics, _ = evaluated
    for key in REQUIRED + LABEL_KEYS + DOMAIN_KEYS:
        value = _get(metrics, key)
        if key != "domains.names":
            assert np.all(np.isfinite(np.asarray(value, dtype=float))), key
    assert metrics["n_images"] == len(digits)
    assert len(metrics["gmm"]["cv_loglik"]) == 5 and len(metrics["kmeans"]["cv_loglik"]) == 5
    assert metrics["domains"]["names"] == ["real", "simulated"]
    assert metrics["domains"]["source"] == "domains"
    for key in ("kl", "kl_stderr"):
        assert np.asarray(metrics["domains"][key]).shape == (2, 2)
    assert np.all(np.asarray(metrics["domains"]["kl"])[~np.eye(2, dtype=bool)] > 0)
    assert metrics["domains"]["positive"] == "simulated"


def test_aurocs_equal_an_independent_computation(evaluated, run_dir, digits):
    _, metrics, _ = evaluated
    simulated = digits.domains == digits.domain_names.index("simulated")
    clusterer = load(run_dir, progress=False)
    nll = -clusterer.score_samples(digits)
    high_frequency = image_scores.high_frequency(conform_images(digits.images, 8, 1))
    assert metrics["domains"]["auroc_nll"] == pytest.approx(roc_auc_score(simulated, nll), abs=1e-9)
    assert metrics["domains"]["auroc_scores"]["high_frequency"] == pytest.approx(
        roc_auc_score(simulated, high_frequency), abs=1e-9
    )


def test_metrics_keys_are_the_documented_schema(evaluated):
    out, metrics, html = evaluated
    documented = {key for key, _ in schema()}
    assert _leaves(metrics) <= documented
    assert set(REQUIRED + LABEL_KEYS + DOMAIN_KEYS) <= documented
    assert 'id="schema"' in html and all(f"<td>{key}</td>" in html for key in documented)


def test_the_report_shows_the_agreement_of_each_candidate_mixture(evaluated, run_dir):
    _, metrics, html = evaluated
    mixture = load(run_dir, progress=False).mixture_
    kept, even = mixture.agreement_, mixture.evenness_
    tried = metrics["gmm"]["training_candidates"]
    seeds = [0, 1, 2, 3]  # two candidates under each scaling (normalize both)
    assert tried == {
        "rule": "agreement", "seed": seeds, "agreement": [kept[s] for s in seeds],
        "evenness": [even[s] for s in seeds], "scaling": ["l2", "l2", "none", "none"], "kept": mixture.kept_,
    }  # fmt: skip
    assert 0 < kept[0] <= 1 and all(0 < v <= 1 for v in even.values())
    assert mixture.candidate_scalings_[mixture.kept_] == mixture.scaling_
    assert "agree most" in html and "<th>seed</th>" in html and "evenness of the cluster sizes" in html
    assert f"more equal cluster sizes was kept: seed {mixture.kept_}." in html and "<td>none</td>" in html


def test_gmm_bic_equals_sklearn_on_the_model_features(evaluated, run_dir, digits):
    _, metrics, _ = evaluated
    clusterer = load(run_dir, progress=False)
    features = clusterer.mixture_.features(clusterer.transform(digits.images))
    assert metrics["gmm"]["bic"] == pytest.approx(clusterer.mixture_.gmm_.bic(features), rel=1e-9)
    assert metrics["gmm"]["aic"] == pytest.approx(clusterer.mixture_.gmm_.aic(features), rel=1e-9)


def test_figures_are_pngs_embedded_in_a_self_contained_report(evaluated):
    out, _, html = evaluated
    figures = sorted((out / "figures").glob("*.png"))
    names = {f.stem for f in figures}
    assert {"loss", "reconstructions", "encoded", "information_criteria", "contingency"} <= names
    assert {"domain_loglik", "kl_log_ratios", "domain_shares", "roc", "pca", "tsne", "galleries"} <= names
    for figure in figures:
        png = figure.read_bytes()
        assert png.startswith(PNG_MAGIC)
        assert f"data:image/png;base64,{base64.b64encode(png).decode()}" in html
    assert html.count("<img ") == len(figures)
    assert re.search(r"https?:", html) is None
    assert "<script" not in html and "<link" not in html
    assert "<b>zero</b>" not in html and "&lt;b class=&quot;x&quot;&gt;zero&lt;/b&gt;" in html
    assert "digits &lt;&amp;&gt; &quot;subset&quot;" in html
    assert "AUROC, high-frequency energy" in html and "AUROC, reconstruction error" in html


def test_report_notes_and_tables_without_labels(tmp_path, run_dir, digits):
    npz = tmp_path / "images.npz"
    np.savez(npz, images=digits.images[:40])
    out = tmp_path / "out"
    prepare_output(out)  # a folder aegmm created: --force may replace it
    (out / "old.txt").write_text("replaced with --force")
    evaluate_run(run_dir, npz, out, force=True, progress=False)
    metrics = json.loads((out / "metrics.json").read_text())
    html = (out / "report.html").read_text()
    assert not {"labels", "kmeans_latent", "kmeans_pixels", "domains"} & set(metrics)
    assert metrics["n_images"] == 40 and len(metrics["gmm"]["cv_loglik"]) == 5
    assert "The images have no labels" in html and "neither domains nor labels" in html
    assert not (out / "old.txt").exists()
    assert not (out / "figures" / "contingency.png").exists()
    assert not (out / "figures" / "domain_shares.png").exists()
    assert html.count("<img ") == len(list((out / "figures").glob("*.png")))


def test_refuses_a_non_empty_output_folder_without_force(tmp_path, run_dir, digits):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        evaluate_run(run_dir, digits, out, progress=False)
    assert (out / "keep.txt").read_text() == "mine"


def test_failure_leaves_no_report(tmp_path, run_dir, digits, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(evaluate_module, "write_json", broken)  # fails after the figures are written
    with pytest.raises(RuntimeError, match="disk full"):
        evaluate_run(run_dir, digits.subset(np.arange(40)), tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "report.html").exists()


def test_rejects_too_few_images_and_unknown_data(tmp_path, run_dir, digits):
    with pytest.raises(ValueError, match=r"at least 10 images for a K=3 mixture .* got 5"):
        evaluate_run(run_dir, digits.subset(np.arange(5)), tmp_path / "a", progress=False)
    with pytest.raises(TypeError, match="expected the data as a path.*got list"):
        evaluate_run(run_dir, [1, 2], tmp_path / "b", progress=False)


def test_plot_functions_draw_on_a_given_axes():
    fig, ax = new_axes()
    history = [{"epoch": 1, "train_loss": 1.0, "val_loss": math.nan}, {"epoch": 2, "train_loss": 0.5}]
    assert loss_history(history, ax=ax) is fig
    assert [line.get_label() for line in ax.get_lines()] == ["training"]


def test_measure_computes_the_report_without_touching_a_file(evaluated, run_dir, digits, monkeypatch):
    from aegmm import measure, storage
    from aegmm.evaluation.measure import header

    out, metrics, _ = evaluated
    clusterer = load(run_dir, progress=False)

    def refuse(*args, **kwargs):
        raise AssertionError("measure wrote a file")

    for name in ("write_atomic", "write_json", "write_tensors", "write_arrays"):
        monkeypatch.setattr(storage, name, refuse)
    found = measure(clusterer, digits, seed=0)
    assert set(found.figures) == {p.stem for p in (out / "figures").glob("*.png")}
    assert all(png.startswith(b"\x89PNG") for png in found.figures.values())
    written = {k: v for k, v in metrics.items() if k not in header(clusterer, digits, "") and k != "seconds"}
    assert set(found.metrics) == set(written)  # the same keys as metrics.json, header aside
    assert found.metrics["gmm"]["bic"] == pytest.approx(metrics["gmm"]["bic"], rel=1e-9)
    assert found.metrics["labels"]["acc"] == metrics["labels"]["acc"]
