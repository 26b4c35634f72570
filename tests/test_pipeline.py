import json

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

import aegmm
from aegmm import ImageClusterer
from conftest import TINY


@pytest.fixture(scope="module")
def fitted():
    from conftest import two_group_images

    images, labels = two_group_images(64)
    # 3 EM restarts: with one, the tiny 2-epoch encoder's groups split by seed and CPU (seed 0 merged
    # them on an AVX-512 machine once its shortcut gradients were computed right)
    return ImageClusterer(**(TINY | {"n_init": 3})).fit(images), images, labels


def test_fit_predict_shapes_and_contracts(fitted):
    clusterer, images, labels = fitted
    proba = clusterer.predict_proba(images)
    assert proba.shape == (64, 2) and np.allclose(proba.sum(axis=1), 1)
    assert np.array_equal(clusterer.predict(images), clusterer.labels_)
    assert np.array_equal(proba.argmax(axis=1), clusterer.labels_)
    assert clusterer.transform(images).shape == (64, 8)
    assert np.isfinite(clusterer.score_samples(images)).all()
    recon = clusterer.reconstruct(images[:5])
    assert recon.shape == (5, 16, 16, 3) and recon.min() >= 0 and recon.max() <= 1
    assert clusterer.n_components_ == 2


def test_fit_predict_equals_fit_then_predict(fitted):
    _, images, _ = fitted
    first = ImageClusterer(**TINY).fit_predict(images)
    second = ImageClusterer(**TINY).fit(images).predict(images)
    assert np.array_equal(first, second)


def test_new_images_are_sorted_into_the_groups_found_at_fit(fitted):
    """Held-out images of each group land in the cluster that group got at fit. (The groups differ
    in brightness, which any encoder keeps: this checks the fit -> predict path, not feature
    quality; quality is measured in benchmarks/quality.py.)"""
    from aegmm.evaluation.metrics import cluster_accuracy
    from conftest import two_group_images

    clusterer, _, labels = fitted
    new_images, new_labels = two_group_images(40, seed=7)
    mapping = {g: np.bincount(clusterer.labels_[labels == g]).argmax() for g in (0, 1)}
    assert mapping[0] != mapping[1]
    predicted = clusterer.predict(new_images)
    assert np.mean(predicted == np.vectorize(mapping.get)(new_labels)) >= 0.9
    assert cluster_accuracy(new_labels, predicted) >= 0.9


def test_predictions_after_load_equal_those_before_saving(fitted, tmp_path):
    clusterer, images, _ = fitted
    clusterer.save(tmp_path / "run")
    loaded = aegmm.load(tmp_path / "run", progress=False)
    assert np.array_equal(loaded.predict(images), clusterer.predict(images))
    assert np.allclose(loaded.predict_proba(images), clusterer.predict_proba(images))
    assert np.allclose(loaded.score_samples(images), clusterer.score_samples(images))
    resolved = {"channels": 3, "normalize": "none", "reducer": "pca", "candidates": 1}  # "auto" for colour
    resolved["features"] = "bottleneck"  # TINY trains by reconstruction
    resolved["precision"] = "float32"  # reconstruction on CPU, whatever the CPU
    resolved["noise"] = 0.0  # a colour autoencoder trains on clean inputs
    resolved["members"] = 1  # and as one network
    assert loaded.get_params() == clone(clusterer).get_params() | resolved
    assert loaded.history_ == clusterer.history_


def test_unfitted_clusterer_raises_not_fitted(images):
    with pytest.raises(NotFittedError):
        ImageClusterer().predict(images)


def test_automatic_k_finds_the_number_of_groups_and_reports_their_true_bic():
    from sklearn.mixture import GaussianMixture

    from aegmm.config import MixtureConfig
    from aegmm.mixture import LatentMixture

    rng = np.random.default_rng(0)
    centers = rng.normal(scale=8.0, size=(4, 6))
    latents = np.concatenate([c + rng.normal(size=(150, 6)) for c in centers])
    config = MixtureConfig(n_components="auto", k_range=(1, 7), reducer="none", n_init=1)
    mixture = LatentMixture(config).fit(latents)
    assert mixture.gmm_.n_components == 4
    assert sorted(mixture.bic_curve_) == list(range(1, 8))
    standard = (latents - latents.mean(axis=0)) / latents.std(axis=0)
    for k in (1, 4, 7):
        independent = GaussianMixture(k, reg_covar=config.reg_covar, max_iter=config.max_iter, random_state=0)
        assert mixture.bic_curve_[k] == pytest.approx(independent.fit(standard).bic(standard), rel=1e-6)


@pytest.mark.parametrize("reducer", ["none", "pca", "umap"])
def test_reducers_place_new_images_identically_after_loading(reducer, images, tmp_path):
    clusterer = ImageClusterer(**(TINY | {"reducer": reducer, "epochs": 1})).fit(images[:40])
    clusterer.save(tmp_path)
    loaded = aegmm.load(tmp_path)
    assert np.allclose(loaded.score_samples(images[40:]), clusterer.score_samples(images[40:]))
    expected_dim = {"none": 8, "pca": 4, "umap": 4}[reducer]
    assert clusterer.mixture_.gmm_.means_.shape == (2, expected_dim)


def test_more_clusters_than_images_is_a_clear_error(images):
    with pytest.raises(
        ValueError, match=r"n_components must be <= the number of distinct latent vectors \(10\), got 12"
    ):
        ImageClusterer(**(TINY | {"n_components": 12, "epochs": 1, "val_fraction": 0})).fit(images[:10])


@pytest.fixture
def saved_run(fitted, tmp_path):
    fitted[0].save(tmp_path / "run")
    return tmp_path / "run"


def test_tampered_weights_are_refused(saved_run):
    path = saved_run / "autoencoder.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupted or was changed"):
        aegmm.load(saved_run)


def test_other_format_version_is_refused(saved_run):
    config = json.loads((saved_run / "config.json").read_text())
    config["format_version"] = 99
    (saved_run / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="format version 99; this aegmm .* reads version 1"):
        aegmm.load(saved_run)


def test_missing_file_is_refused(saved_run):
    (saved_run / "mixture.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="mixture.safetensors is missing"):
        aegmm.load(saved_run)


def test_unknown_setting_is_refused(saved_run):
    config = json.loads((saved_run / "config.json").read_text())
    config["model"]["depth"] = 50
    (saved_run / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"unknown ModelConfig settings \['depth'\]"):
        aegmm.load(saved_run)


def test_not_a_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not an aegmm run: config.json is missing"):
        aegmm.load(tmp_path)


def test_mixture_is_fitted_on_a_subsample_above_the_limit():
    from aegmm.config import MixtureConfig
    from aegmm.mixture import LatentMixture

    rng = np.random.default_rng(0)
    latents = np.concatenate([rng.normal(-3, 1, (500, 3)), rng.normal(3, 1, (500, 3))])
    config = MixtureConfig(n_components=2, reducer="none", n_init=1, max_fit_samples=100)
    small = LatentMixture(config).fit(latents)
    full = LatentMixture(MixtureConfig(n_components=2, reducer="none", n_init=1)).fit(latents)
    assert not np.allclose(small.center_, full.center_)  # statistics come from the subsample
    assert np.array_equal(np.sort(small.gmm_.means_[:, 0]).round(0), np.sort(full.gmm_.means_[:, 0]).round(0))
    assert small.predict(latents).shape == (1000,)


def test_large_fits_encode_to_a_memory_mapped_file_with_the_same_result(images, monkeypatch):
    import aegmm.pipeline
    import aegmm.train

    settings = TINY | {"epochs": 1}
    in_memory = ImageClusterer(**settings).fit(images)
    written = []
    real_encode = aegmm.train.encode

    def spy(*args, out=None, **kwargs):
        written.append(out)
        return real_encode(*args, out=out, **kwargs)

    monkeypatch.setattr(aegmm.pipeline, "LATENTS_IN_MEMORY", 10)
    monkeypatch.setattr(aegmm.pipeline, "encode", spy)
    mapped = ImageClusterer(**settings).fit(images)
    assert written[0] is not None and written[0].suffix == ".npy"
    assert not written[0].exists()  # the scratch file is removed after fitting
    assert np.array_equal(mapped.labels_, in_memory.labels_)


@pytest.fixture
def encoded(monkeypatch) -> list[int]:
    """Batch sizes of every encoder pass outside training (training and validation are not counted)."""
    from aegmm import pipeline
    from aegmm.nn.autoencoder import Encoder

    counted: list[int] = []
    real_pooled, real_train = Encoder.pooled, pipeline._train

    def pooled(self, x):  # every pass through the trunk, whichever features it returns
        counted.append(len(x))
        return real_pooled(self, x)

    def train(*args, **kwargs):
        trained = real_train(*args, **kwargs)
        counted.clear()  # what training itself encoded
        return trained

    monkeypatch.setattr(Encoder, "pooled", pooled)
    monkeypatch.setattr(pipeline, "_train", train)
    return counted


def test_fitting_a_run_encodes_each_training_image_once(images, tmp_path, encoded):
    from aegmm.data import ImageSet
    from aegmm.runs import fit_run

    data = ImageSet(images, [f"img{i}" for i in range(len(images))])
    clusterer, table = fit_run(data, tmp_path / "run", ImageClusterer(**(TINY | {"epochs": 1})))
    assert sum(encoded) == len(images)
    assert table.paths == data.paths and np.array_equal(table.cluster, clusterer.labels_)
    encoded.clear()
    np.testing.assert_array_equal(clusterer.predict(images), table.cluster)  # the same as a new pass
    assert sum(encoded) == len(images)


def test_assign_and_evaluate_encode_each_image_once(fitted, tmp_path, encoded):
    from aegmm.evaluation.evaluate import evaluate_run

    clusterer, images, labels = fitted
    table = clusterer.assign(images)
    assert sum(encoded) == len(images) and len(table.cluster) == len(images)
    clusterer.save(tmp_path / "run")
    encoded.clear()
    data = aegmm.ImageSet(images, [str(i) for i in range(len(images))], labels, ["a", "b"])
    evaluate_run(tmp_path / "run", data, tmp_path / "report", progress=False)
    assert sum(encoded) == len(images)  # latents and reconstructions from the same pass
