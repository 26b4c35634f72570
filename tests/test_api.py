"""The Python surface: each verb's library function, keyword-only configs, the options of `aegmm fit`
generated from the config dataclasses, and the mixture as a scikit-learn Pipeline."""

from __future__ import annotations

import csv
from dataclasses import fields

import numpy as np
import pytest
from sklearn.pipeline import Pipeline

import aegmm
from aegmm.cli_parser import FIT_FIELDS, FLAGS, build_parser, field_help
from aegmm.config import UMAP_MIN_IMAGES, MixtureConfig, ModelConfig, RunConfig, TrainConfig
from aegmm.mixture import LatentMixture
from conftest import TINY


def test_every_verb_is_a_public_library_function():
    for name in ("fit_run", "assign_run", "evaluate_run", "pack_images", "run_demo", "measure"):
        assert name in aegmm.__all__ and callable(getattr(aegmm, name))


@pytest.mark.parametrize("kind", [ModelConfig, TrainConfig, MixtureConfig, RunConfig])
def test_configs_are_built_by_keyword_only(kind):
    first = fields(kind)[0]
    with pytest.raises(TypeError):
        kind(getattr(kind(), first.name))
    assert kind(**{first.name: getattr(kind(), first.name)}) == kind()


def test_fit_options_carry_the_dataclass_defaults_and_comments():
    parser = build_parser()
    args = parser.parse_args(["fit", "images", "--out", "run"])
    fit = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith("fit"))
    helps = {action.dest: action.help for action in fit._actions}
    for name, (kind, _, _) in FIT_FIELDS.items():
        default = next(f.default for f in fields(kind) if f.name == name)
        assert getattr(args, name) == (None if name == "k_range" else default)
        assert helps[name].startswith(field_help(kind, name).split(";")[0])
    assert "(default 10)" in helps["n_components"] and "--k-range" in helps["n_components"]
    assert FLAGS["n_components"] == "--clusters" and FLAGS["covariance_type"] == "--covariance"


def test_field_help_reads_continued_comments_and_names_flags():
    text = field_help(TrainConfig, "objective")
    assert text.startswith("how the encoder learns")
    assert text.endswith("auto: contrastive for colour, else reconstruction")
    assert "--k-range" in field_help(MixtureConfig, "n_components")
    # a word that is also a setting's name becomes its flag: comments use such words only for it
    assert "--features" not in text + field_help(TrainConfig, "view_size")
    assert "--latent-dim" in field_help(MixtureConfig, "features")


def test_fit_run_and_assign_run_work_from_python(image_folder, tmp_path):
    clusterer, table = aegmm.fit_run(image_folder, tmp_path / "run", aegmm.ImageClusterer(**TINY))
    assert (tmp_path / "run" / "assignments.csv").is_file() and len(table.paths) == 24
    extras = aegmm.AssignExtras(gallery=tmp_path / "gallery.png")
    done = aegmm.assign_run(tmp_path / "run", image_folder, tmp_path / "a.csv", extras=extras, progress=False)
    with open(tmp_path / "a.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert done.counts.sum() == len(rows) == 24 and (tmp_path / "gallery.png").is_file()
    assert [int(r["cluster"]) for r in rows] == list(table.cluster)  # the same images, the same clusters
    assert done.lines == [f"gallery written to {tmp_path / 'gallery.png'}"]


@pytest.mark.parametrize("reducer,normalize", [("pca", "none"), ("none", "none"), ("pca", "l2")])
def test_the_mixture_is_a_pipeline_saved_and_rebuilt_from_arrays(reducer, normalize):
    rng = np.random.default_rng(0)
    latents = np.concatenate([rng.normal(0, 1, (60, 6)), rng.normal(4, 1, (60, 6))])
    config = MixtureConfig(n_components=2, reducer=reducer, reduced_dim=3, normalize=normalize)
    mixture = LatentMixture(config).fit(latents)
    assert isinstance(mixture.pipeline_, Pipeline)
    assert [name for name, _ in mixture.pipeline_.steps] == ["normalize", "scale", "reduce", "gmm"]
    np.testing.assert_array_equal(mixture.predict(latents), mixture.pipeline_.predict(latents))
    proba, log_likelihood = mixture.score(latents)
    np.testing.assert_array_equal(proba, mixture.predict_proba(latents))
    np.testing.assert_array_equal(log_likelihood, mixture.score_samples(latents))
    rebuilt = LatentMixture.from_arrays(*mixture.to_arrays(), config)
    np.testing.assert_array_equal(rebuilt.score_samples(latents), mixture.score_samples(latents))
    assert rebuilt.features(latents).shape[1] == (3 if reducer == "pca" else 6)


def test_l2_normalisation_ignores_each_vectors_length():
    rng = np.random.default_rng(1)
    directions = np.concatenate([rng.normal((3, 0, 0), 0.3, (50, 3)), rng.normal((0, 3, 0), 0.3, (50, 3))])
    lengths = rng.uniform(0.2, 5.0, (100, 1))  # the same directions at any scale
    config = MixtureConfig(n_components=2, reducer="none", normalize="l2")
    mixture = LatentMixture(config).fit(directions * lengths)
    np.testing.assert_allclose(
        mixture.features(directions * lengths), mixture.features(directions), atol=1e-9
    )
    assert LatentMixture(MixtureConfig(n_components=2, reducer="none")).fit(directions * lengths).features(
        directions
    ).std() != pytest.approx(mixture.features(directions).std())
    with pytest.raises(ValueError, match="normalize must be one of auto, none, l2, both, got 'l1'"):
        MixtureConfig(normalize="l1")


def test_an_auto_latent_size_is_chosen_said_saved_and_offered_by_the_cli(tmp_path, capsys):
    from aegmm.pipeline import resolve_auto
    from conftest import two_group_images

    gray, _ = two_group_images(48, channels=1)
    umap = {"reducer": "umap", "candidates": 1, "normalize": "l2"}  # UMAP's path, at a test's size
    options = TINY | umap | {"latent_dim": "auto", "members": 1, "progress": True}
    clusterer = aegmm.ImageClusterer(**options).fit(gray)
    assert "latent_dim 64" in capsys.readouterr().err  # a single-channel autoencoder under UMAP: 64, said
    assert clusterer.config_.model.latent_dim == 64 and clusterer.transform(gray).shape == (48, 64)
    loaded = aegmm.load(clusterer.save(tmp_path / "run"), progress=False)
    assert loaded.config_.model.latent_dim == 64  # the run saves the size it trained, not "auto"
    np.testing.assert_array_equal(loaded.transform(gray[:8]), clusterer.transform(gray[:8]))
    small = resolve_auto(RunConfig(model=ModelConfig(channels=1)), UMAP_MIN_IMAGES - 1, progress=True)
    assert (small.mixture.reducer, small.model.latent_dim) == ("pca", 32)  # PCA: the study's size
    assert "latent_dim 32" in capsys.readouterr().err
    colour = resolve_auto(RunConfig(), 16_000, progress=True)
    assert colour.model.latent_dim == 32 and "latent_dim 32" in capsys.readouterr().err
    given = resolve_auto(RunConfig(model=ModelConfig(channels=1, latent_dim=16)), 8000, progress=True)
    assert given.model.latent_dim == 16 and "latent_dim" not in capsys.readouterr().err
    assert RunConfig.from_dict({"model": {"channels": 1}}).model.latent_dim == 32  # saved before auto
    parse = build_parser().parse_args
    assert parse(["fit", "x", "--out", "y", "--latent-dim", "auto"]).latent_dim == "auto"
    assert parse(["fit", "x", "--out", "y", "--latent-dim", "48"]).latent_dim == 48
    with pytest.raises(SystemExit):
        parse(["fit", "x", "--out", "y", "--latent-dim", "0"])
    assert "error: --latent-dim must be >= 1, got 0" in capsys.readouterr().err


def test_a_saved_run_must_name_its_latent_size(tmp_path, images):
    import json

    run = aegmm.ImageClusterer(**TINY).fit(images).save(tmp_path / "run")
    saved = json.loads((run / "config.json").read_text())
    saved["model"]["latent_dim"] = "auto"
    (run / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="must name the latent size the run trained, got 'auto'"):
        aegmm.load(run, progress=False)
