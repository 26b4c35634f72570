"""The mixture's "auto" settings: UMAP for single-channel collections, PCA otherwise; and how a
UMAP mixture sorts new images (by the clusters of their nearest training images)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import aegmm
from aegmm import ImageClusterer
from aegmm.config import UMAP_MIN_IMAGES, MixtureConfig
from aegmm.mixture import LatentMixture
from conftest import TINY

UMAP_SETTINGS = {"reducer": "umap", "normalize": "l2", "reduced_dim": 10, "n_init": 20, "candidates": 5}
GRAY_SETTINGS = UMAP_SETTINGS | {"normalize": "both"}  # an autoencoder's single-channel latents
PCA_SETTINGS = {"reducer": "pca", "normalize": "none", "reduced_dim": 20, "n_init": 3, "candidates": 1}


def settings(config: MixtureConfig) -> dict:
    return {name: getattr(config, name) for name in UMAP_SETTINGS}


@pytest.mark.parametrize(
    "channels,n_images,objective,expected",
    [
        (1, UMAP_MIN_IMAGES, "reconstruction", GRAY_SETTINGS),
        (1, 823, "reconstruction", GRAY_SETTINGS),  # the long-tailed digits (results/small_grayscale/)
        (1, 98, "reconstruction", GRAY_SETTINGS),  # 98 long-tailed digits: UMAP 0.65, PCA 0.44 (umap_floor/)
        (1, UMAP_MIN_IMAGES, "contrastive", UMAP_SETTINGS),  # contrastive features: directions
        (1, UMAP_MIN_IMAGES - 1, "reconstruction", PCA_SETTINGS),  # too few for UMAP's neighbourhoods
        (3, 10**6, "reconstruction", PCA_SETTINGS),  # a colour autoencoder's latents
        (3, UMAP_MIN_IMAGES, "contrastive", UMAP_SETTINGS),
        (3, UMAP_MIN_IMAGES, "hybrid", UMAP_SETTINGS),  # the same contrastive features
        (3, 100, "contrastive", UMAP_SETTINGS),  # 100 CIFAKE images: UMAP 0.28, PCA 0.18 (umap_floor/)
        (3, UMAP_MIN_IMAGES - 1, "contrastive", PCA_SETTINGS),  # too few: below the smallest size measured
        (None, 10**6, "contrastive", PCA_SETTINGS),  # the kind of image is unknown: latents alone
    ],
)
def test_auto_resolves_by_the_kind_and_number_of_images_and_the_objective(
    channels, n_images, objective, expected
):
    config = MixtureConfig()
    assert settings(config) == dict.fromkeys(UMAP_SETTINGS, "auto")
    chosen = config.resolve(channels=channels, n_images=n_images, objective=objective)
    assert settings(chosen) == expected


def test_settings_given_are_kept_and_the_rest_follow_the_reducer():
    chosen = MixtureConfig(reducer="umap", n_init=2).resolve(channels=3, n_images=50)
    assert settings(chosen) == UMAP_SETTINGS | {"n_init": 2}
    chosen = MixtureConfig(reduced_dim=5, normalize="none").resolve(channels=1, n_images=5000)
    assert settings(chosen) == UMAP_SETTINGS | {"reduced_dim": 5, "normalize": "none"}
    assert MixtureConfig(reducer="umap").resolve(channels=3, n_images=5000).normalize == "l2"  # colour
    assert settings(MixtureConfig(reducer="none").resolve(channels=1, n_images=5000))["reduced_dim"] == 20


@pytest.mark.parametrize(
    "name,value", [("reduced_dim", 0), ("n_init", -1), ("reduced_dim", "ten"), ("candidates", 0)]
)
def test_counts_must_be_whole_numbers_or_auto(name, value):
    with pytest.raises(ValueError, match=rf"{name} must be a whole number >= 1 or 'auto', got {value!r}"):
        MixtureConfig(**{name: value})


@pytest.mark.parametrize("flag", ["--reduced-dim", "--candidates"])
def test_fit_options_that_count_take_auto_or_a_count(flag):
    from aegmm.cli_parser import build_parser

    parser, name = build_parser(), flag[2:].replace("-", "_")
    assert getattr(parser.parse_args(["fit", "d", "--out", "o"]), name) == "auto"
    assert getattr(parser.parse_args(["fit", "d", "--out", "o", flag, "7"]), name) == 7
    done = subprocess.run(
        [sys.executable, "-m", "aegmm", "fit", "d", "--out", "o", flag, "0"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and done.stderr == f"aegmm: error: {flag} must be >= 1, got 0\n"


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    centers = np.array([[6.0, 0, 0, 0, 0, 0], [0, 6.0, 0, 0, 0, 0], [0, 0, 6.0, 0, 0, 0]])
    return centers[labels] + rng.normal(size=(n, 6)), labels


def test_umap_mixture_keeps_training_clusters_and_sorts_new_points_with_their_neighbours(tmp_path):
    from aegmm.evaluation.metrics import cluster_accuracy

    latents, labels = blobs(300, seed=0)
    config = MixtureConfig(n_components=3, reducer="umap", reduced_dim=2, n_init=2)
    mixture = LatentMixture(config).fit(latents)
    own = mixture.gmm_.predict(mixture.pipeline_.named_steps["reduce"].embedding_)
    np.testing.assert_array_equal(mixture.predict(latents), own)  # training points keep their cluster
    assert cluster_accuracy(labels, own) == 1.0
    new, new_labels = blobs(90, seed=1)
    proba, log_likelihood = mixture.score(new)
    assert proba.shape == (90, 3) and np.allclose(proba.sum(axis=1), 1) and np.isfinite(log_likelihood).all()
    mapping = {g: own[labels == g][0] for g in range(3)}
    np.testing.assert_array_equal(proba.argmax(axis=1), [mapping[g] for g in new_labels])
    rebuilt = LatentMixture.from_arrays(*mixture.to_arrays(), mixture.config)
    np.testing.assert_array_equal(rebuilt.predict_proba(new), proba)
    features, same_proba, same_log_likelihood = mixture.score(new, with_features=True)  # the report's path
    np.testing.assert_array_equal(features, mixture.features(new))
    np.testing.assert_array_equal(same_proba, proba)
    np.testing.assert_array_equal(same_log_likelihood, log_likelihood)


def test_umaps_compiled_functions_are_kept_on_disk_except_one_compiled_with_two_sets_of_options():
    """The next process loads them instead of compiling them again (benchmarks/umap_compile.py
    checks that the embedding stays the same); the layout step has a serial and a parallel
    dispatcher of one Python function, which numba's cache would not tell apart."""
    from pathlib import Path

    import umap.layouts
    import umap.umap_

    from aegmm.embedding import umap_embedding

    latents, _ = blobs(60, seed=0)
    umap_embedding(latents.astype(np.float32), 2, seed=0)
    for function in (umap.umap_.smooth_knn_dist, umap.umap_.compute_membership_strengths):
        folder = function.stats.cache_path
        assert folder is not None, function
        name = function.py_func.__qualname__
        assert list(Path(folder).glob(f"*{name}-*.nbi")), f"no cache index for {name} in {folder}"
    serial = umap.layouts._nb_optimize_layout_euclidean_single_epoch
    parallel = umap.layouts._nb_optimize_layout_euclidean_single_epoch_parallel
    assert serial.py_func is parallel.py_func
    assert serial.stats.cache_path is None and parallel.stats.cache_path is None


def test_a_single_channel_collection_is_clustered_with_umap_and_the_run_records_it(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = UMAP_MIN_IMAGES
    images = rng.integers(0, 60, (n, 8, 8, 1)).astype(np.uint8)
    images[n // 2 :] += 150  # two brightness groups
    options = TINY | {"image_size": 8, "epochs": 1, "batch_size": 128, "n_components": 2, "progress": True}
    options.pop("reduced_dim"), options.pop("n_init")  # every mixture setting auto
    options["members"] = 1  # one network's 8 latent numbers (auto would train two: test_ensemble.py)
    clusterer = ImageClusterer(**options).fit(images)
    assert settings(clusterer.config_.mixture) == GRAY_SETTINGS
    said = capsys.readouterr().err
    chosen = "precision float32, noise 0.1, reducer umap, normalize both"
    assert f"settings for {n:,} single-channel images: {chosen}" in said
    assert "candidate seed 9 (none): mean ARI with the others" in said and "the none candidates' pick" in said
    assert clusterer.mixture_.gmm_.means_.shape == (2, 8)  # 10 dimensions asked, 8 latent numbers
    clusterer.save(tmp_path / "run")
    loaded = aegmm.load(tmp_path / "run", progress=False)
    assert loaded.reducer == "umap" and loaded.n_init == 20 and loaded.candidates == 5
    assert (
        loaded.mixture_.agreement_ == clusterer.mixture_.agreement_
        and len(clusterer.mixture_.agreement_) == 10  # five candidates under each scaling
    )
    assert loaded.mixture_.evenness_ == clusterer.mixture_.evenness_ and len(loaded.mixture_.evenness_) == 10
    assert loaded.mixture_.scaling_ == clusterer.mixture_.scaling_
    scalings = dict.fromkeys(range(5), "l2") | dict.fromkeys(range(5, 10), "none")
    assert loaded.mixture_.candidate_scalings_ == scalings
    np.testing.assert_array_equal(loaded.predict(images[::50]), clusterer.predict(images[::50]))


def grid_of_blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Eight round groups on a 4 x 2 grid in 2-D, 6 standard deviations apart."""
    rng = np.random.default_rng(seed)
    labels = np.arange(400) % 8
    centers = np.stack(np.meshgrid(np.arange(4), np.arange(2)), -1).reshape(-1, 2) * 6.0
    return centers[labels] + rng.normal(size=(400, 2)), labels


def test_candidates_keep_the_partition_the_others_agree_with_most():
    from aegmm.evaluation.metrics import cluster_accuracy

    latents, labels = grid_of_blobs()
    one = dict(n_components=8, reducer="none", n_init=1)

    def accuracy(mixture: LatentMixture) -> float:
        return cluster_accuracy(labels, mixture.predict(latents))

    alone = {seed: LatentMixture(MixtureConfig(**one, seed=seed)).fit(latents) for seed in range(8)}
    wrong = [seed for seed, mixture in alone.items() if accuracy(mixture) < 0.95]
    assert wrong and max(map(accuracy, alone.values())) > 0.98  # EM alone sometimes merges two groups
    start = wrong[0]
    chosen = LatentMixture(MixtureConfig(**one, seed=start, candidates=8 - start)).fit(latents)
    agreement = chosen.agreement_
    assert sorted(agreement) == list(range(start, 8))
    best = max(agreement, key=agreement.get)
    assert accuracy(chosen) > 0.98 and agreement[best] > agreement[start]
    np.testing.assert_array_equal(chosen.predict(latents), alone[best].predict(latents))  # the same fit


def test_the_balance_rule_keeps_the_candidate_with_the_most_equal_clusters():
    from aegmm.candidates import evenness
    from aegmm.evaluation.metrics import cluster_accuracy

    latents, labels = grid_of_blobs()
    one = dict(n_components=8, reducer="none", n_init=1)
    alone = {seed: LatentMixture(MixtureConfig(**one, seed=seed)).fit(latents) for seed in range(8)}
    sizes = {seed: evenness(m.predict(latents), 8) for seed, m in alone.items()}
    assert len({round(v, 6) for v in sizes.values()}) > 1  # the seeds' partitions differ in balance
    chosen = LatentMixture(MixtureConfig(**one, candidates=8, candidate_rule="balance")).fit(latents)
    assert chosen.evenness_ == pytest.approx(sizes)
    best = max(sizes, key=sizes.get)
    np.testing.assert_array_equal(chosen.predict(latents), alone[best].predict(latents))
    assert cluster_accuracy(labels, chosen.predict(latents)) > 0.98  # eight equal groups: kept right


def test_evenness_is_one_for_equal_clusters_and_less_for_unequal_or_empty_ones():
    from aegmm.candidates import evenness

    assert evenness(np.repeat([0, 1, 2], 5), 3) == pytest.approx(1.0)
    assert evenness(np.repeat([0, 1, 2], [13, 1, 1]), 3) < evenness(np.repeat([0, 1, 2], [7, 4, 4]), 3) < 1
    assert evenness(np.repeat([0, 1], 5), 3) == pytest.approx(np.log(2) / np.log(3))  # one cluster empty
    assert evenness(np.zeros(4, int), 1) == 1.0


def test_the_command_line_keeps_a_candidate_by_balance_and_the_report_says_so(tmp_path):
    import json

    from aegmm.cli import main
    from conftest import TINY_ARGS, two_group_images

    images, labels = two_group_images(40)
    np.savez(tmp_path / "train.npz", images=images, labels=labels)
    run, report = tmp_path / "run", tmp_path / "report"
    rule = ["--candidates", "3", "--candidate-rule", "balance"]
    assert main(["fit", str(tmp_path / "train.npz"), "--out", str(run), *TINY_ARGS, *rule]) == 0
    assert json.loads((run / "config.json").read_text())["mixture"]["candidate_rule"] == "balance"
    assert main(["evaluate", str(run), str(tmp_path / "train.npz"), "--out", str(report), "--quiet"]) == 0
    tried = json.loads((report / "metrics.json").read_text())["gmm"]["training_candidates"]
    assert tried["rule"] == "balance" and len(tried["evenness"]) == 3
    html = (report / "report.html").read_text()
    assert "are the most equal in size" in html and "evenness of the cluster sizes" in html


def test_an_unknown_candidate_rule_is_refused_in_one_line():
    with pytest.raises(ValueError, match="candidate_rule must be one of agreement, balance, got 'size'"):
        MixtureConfig(candidate_rule="size")


def test_candidates_fitted_in_worker_processes_equal_those_fitted_here(monkeypatch):
    from aegmm import candidates as module

    latents, _ = grid_of_blobs()
    config = MixtureConfig(n_components=8, reducer="none", n_init=1, candidates=4)
    here = LatentMixture(config).fit(latents, n_jobs=2)  # 400 points: too few for workers
    used = []

    class Counting(module.Parallel):
        def __call__(self, jobs):
            used.append(self.n_jobs)
            return super().__call__(jobs)

    monkeypatch.setattr(module, "Parallel", Counting)
    monkeypatch.setattr(module, "PARALLEL_MIN_SAMPLES", len(latents))
    there = LatentMixture(config).fit(latents, n_jobs=2)
    assert used == [2]
    assert there.agreement_ == here.agreement_ and there.bic_curve_ == here.bic_curve_
    for name in ("means_", "covariances_", "weights_"):
        np.testing.assert_array_equal(getattr(there.gmm_, name), getattr(here.gmm_, name))
    np.testing.assert_array_equal(there.predict(latents), here.predict(latents))


def groups_told_apart_by_length(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three groups of 200 in 2-D: two in one direction at lengths 1 and 3, the third at length 2
    in two tight bunches 20 degrees apart. Directions alone show three other groups."""
    rng = np.random.default_rng(seed)
    angles = np.radians(np.r_[np.zeros(400), np.full(100, 90.0), np.full(100, 110.0)])
    lengths = np.r_[np.ones(200), np.full(200, 3.0), np.full(200, 2.0)]
    angles += rng.normal(0, 0.03, 600)
    points = lengths[:, None] * np.c_[np.cos(angles), np.sin(angles)] * rng.normal(1, 0.03, (600, 1))
    return points, np.repeat(np.arange(3), 200)


def test_both_scalings_keep_the_more_even_of_each_scalings_choice():
    from aegmm.candidates import evenness
    from aegmm.evaluation.metrics import cluster_accuracy

    points, labels = groups_told_apart_by_length()
    one = dict(n_components=3, reducer="none", n_init=3, candidates=3)
    by_direction = LatentMixture(MixtureConfig(**one, normalize="l2")).fit(points)
    by_length = LatentMixture(MixtureConfig(**one, normalize="none", seed=3)).fit(points)
    assert cluster_accuracy(labels, by_direction.predict(points)) < 0.9  # the lengths' groups merged
    assert cluster_accuracy(labels, by_length.predict(points)) > 0.99
    both = LatentMixture(MixtureConfig(**one, normalize="both")).fit(points)
    assert both.candidate_scalings_ == {0: "l2", 1: "l2", 2: "l2", 3: "none", 4: "none", 5: "none"}
    assert both.agreement_ == by_direction.agreement_ | by_length.agreement_  # each within its own
    assert both.scaling_ == "none" and both.pipeline_.named_steps["normalize"] == "passthrough"
    assert evenness(by_length.predict(points), 3) > evenness(by_direction.predict(points), 3)
    np.testing.assert_array_equal(both.predict(points), by_length.predict(points))
    arrays, meta = both.to_arrays()
    rebuilt = LatentMixture.from_arrays(arrays, meta, both.config)
    assert rebuilt.scaling_ == "none" and rebuilt.kept_ == both.kept_ >= 3
    np.testing.assert_array_equal(rebuilt.predict(points), both.predict(points))
    tampered = (("scaling", "l3", "scaling must be l2 or none, got 'l3'"), ("kept", "<b>", "a seed"))
    for key, bad, says in tampered:
        with pytest.raises(ValueError, match=says):  # a tampered mixture.json is refused
            LatentMixture.from_arrays(arrays, meta | {key: bad}, both.config)


def test_l2_scales_each_members_part_to_the_same_length_and_one_part_as_sklearn_does():
    from sklearn.preprocessing import Normalizer

    from aegmm.scaling import UnitParts

    x = np.random.default_rng(0).normal(size=(20, 6)) * np.arange(1, 21)[:, None]
    x[0, :3] = 0  # a zero part stays zero
    halves = np.split(UnitParts(2).fit(x).transform(x), 2, axis=1)
    assert np.allclose(np.linalg.norm(halves[1], axis=1), 1 / np.sqrt(2))
    assert np.allclose(np.linalg.norm(halves[0][1:], axis=1), 1 / np.sqrt(2)) and not halves[0][0].any()
    np.testing.assert_array_equal(UnitParts(1).fit(x).transform(x), Normalizer().fit(x).transform(x))
    with pytest.raises(ValueError, match="6 numbers per vector do not split into 4 equal parts"):
        UnitParts(4).fit(x)
    with pytest.raises(ValueError, match="parts must be a whole number >= 1, got 0"):
        MixtureConfig(parts=0)
