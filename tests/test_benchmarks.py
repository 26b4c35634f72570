"""The benchmark scripts still run at HEAD: each one's --smoke run, and report.py on the committed results.

Every smoke runs as a subprocess from the repository root with one thread, on a tiny input, and
writes into tmp_path; the assertions read what it wrote. None of them may touch benchmarks/results.
What needs no fresh process runs in this one (a fresh process spends 4-5 s importing torch):
report.py's rebuilds of the committed tables, and the arguments a script refuses.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from aegmm.config import TrainConfig
from aegmm.mixture import LatentMixture
from aegmm.precision import native_bfloat16

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def run_script(script: str, *args: str, timeout: int = 180) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, f"benchmarks/{script}", *args]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (
        f"{' '.join(command[1:])} exited with status {done.returncode}:\n{done.stderr[-4000:]}"
    )
    return done.stdout


def cifake_classes_smoke(script: str, *changes: str, out: Path, methods: str) -> str:
    """A quality.py wrapper's --smoke run on the CIFAKE subset's CIFAR-class task only."""
    options = [
        "--smoke",
        "--out",
        str(out),
        "--datasets",
        "cifake",
        "--methods",
        methods,
        "--tasks",
        "cifar10",
    ]
    return run_script(script, *changes, *options)


def benchmark_module(name: str):
    """benchmarks/NAME.py imported under another name (so it never shadows a test module), with
    benchmarks/ on the path for its own imports."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
        del sys.modules[spec.name]
    return module


def refusal(script: str, *args: str) -> str:
    """What benchmarks/SCRIPT says when it refuses ARGS, from its main() in this process (a fresh
    process spends 4-5 s importing torch): the text of its SystemExit, or what argparse printed."""
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed), pytest.raises(SystemExit) as refused:
        benchmark_module(script.removesuffix(".py")).main(list(args))
    code = refused.value.code
    assert code not in (0, None), f"{script} {args} exited with {code!r}"
    return code if isinstance(code, str) else printed.getvalue()


def finite(value, low: float = -math.inf, high: float = math.inf) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and math.isfinite(value) and low <= value <= high


def results_snapshot() -> dict[str, int]:
    return {str(p.relative_to(RESULTS)): p.stat().st_mtime_ns for p in RESULTS.rglob("*") if p.is_file()}


@pytest.fixture
def results_untouched():
    before = results_snapshot()
    yield
    assert results_snapshot() == before, "a smoke run changed benchmarks/results/"


def table_rows(markdown: str) -> list[list[str]]:
    """The cells of every markdown table row."""
    return [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in markdown.splitlines()
        if line.startswith("| ")
    ]


def test_variants_read_numbers_and_auto_as_the_settings_take_them():
    variants = benchmark_module("variants")
    assert variants.parse_variant("noise=0,epochs=3,lr=2e-3").train == (
        ("epochs", 3),
        ("lr", 0.002),
        ("noise", 0.0),
    )
    assert variants.parse_variant("noise=auto,candidates=auto").train == (("noise", "auto"),)
    assert variants.parse_variant("latent_dim=32").train == (("latent_dim", 32),)  # a count, auto by default
    assert variants.parse_variant("latent_dim=auto").train == (("latent_dim", "auto"),)
    assert variants.parse_variant("train_images=3000,members=1").train == (
        ("members", 1),
        ("train_images", 3000),
    )
    for given in ("noise=0", "noise=0.1", "noise=auto", "members=2", "members=auto", "train_images=300"):
        TrainConfig(**dict(variants.parse_variant(given).train))


def test_each_variant_is_clustered_as_fit_would_cluster_with_its_settings_today(tmp_path, monkeypatch):
    """quality.py's mixture-only variants and cached networks: the mixture settings are chosen as
    `fit` would choose them now with the variant's settings given, not copied from the network's
    run (a changed default reaches cached networks; reducer=pca brings PCA's own restarts)."""
    import aegmm.config as config_module
    from conftest import TINY, two_group_images

    variants = benchmark_module("variants")
    images, _ = two_group_images(60, channels=1)
    base = {name: TINY[name] for name in ("objective", "image_size", "width", "epochs", "batch_size")}
    base |= {"latent_dim": 8, "members": 1, "candidates": 1}  # the reducer and the rest: auto
    used = []
    monkeypatch.setattr(
        variants, "LatentMixture", lambda config: used.append(config) or LatentMixture(config)
    )
    default, pca = variants.parse_variant("default"), variants.parse_variant("reducer=pca")
    first = variants.train(default, images, images, 2, None, cache=tmp_path, base=base)
    variants.cluster(default, first, 2), variants.cluster(pca, first, 2)
    assert used[0] == replace(first.clusterer.config_.mixture, n_components=2)  # as the fit chose
    assert (used[0].reducer, used[0].n_init, used[1].reducer, used[1].n_init) == ("umap", 20, "pca", 3)
    monkeypatch.setattr(config_module, "UMAP_MIN_IMAGES", 61)  # the default changes; the network does not
    again = variants.train(default, images, images, 2, None, cache=tmp_path, base=base)
    assert "from_cache" in again.timings and again.clusterer.config_.mixture.reducer == "umap"
    variants.cluster(default, again, 2)
    assert used[-1] == replace(used[1], n_components=2)  # today's default for 60 images: PCA's


def test_feature_neighbours_reads_the_domain_the_features_keep():
    """feature_neighbours.domain: features split by domain give purity and a linear read-out near 1;
    a domain the features do not hold gives about one half."""
    probe = benchmark_module("feature_neighbours")
    rng = np.random.default_rng(0)
    features = rng.normal(size=(400, 8))
    kept = (features[:, 0] > 0).astype(int)
    features[:, 0] += np.where(kept == 1, 3.0, -3.0)
    near, _ = probe.neighbours(features[:300], features[300:])
    split = probe.domain(near, features[:300], kept[:300], features[300:], kept[300:])
    assert split["domain_purity_20"] > 0.95 and split["linear_domain_heldout_acc"] > 0.95
    unrelated = rng.integers(0, 2, 400)
    lost = probe.domain(near, features[:300], unrelated[:300], features[300:], unrelated[300:])
    assert 0.35 < lost["domain_purity_20"] < 0.65 and 0.35 < lost["linear_domain_heldout_acc"] < 0.65


def test_feature_neighbours_main_reports_a_cache_entrys_class_and_domain_neighbours(tmp_path, monkeypatch):
    """feature_neighbours.main on an entry whose features split the classes and ignore the domain:
    class purity and the held-out vote near 1, domain purity near one half, both reports written;
    features of another split are refused with the sizes it expected."""
    from types import SimpleNamespace

    probe = benchmark_module("feature_neighbours")
    rng = np.random.default_rng(0)
    classes, domains = np.repeat([0, 1], 150), rng.integers(0, 2, 300)
    features = rng.normal(size=(300, 8)) + 6.0 * np.eye(8)[classes]
    order = rng.permutation(300)
    classes, domains, features = classes[order], domains[order], features[order]
    parts = (slice(200), slice(200, None))  # fit, held out
    split = tuple(SimpleNamespace(classes=classes[s], domains=domains[s]) for s in parts)
    monkeypatch.setattr(probe, "load_cifake", lambda: None)
    monkeypatch.setattr(probe, "split_cifake", lambda data: split)
    entry, out = tmp_path / "entry", tmp_path / "out"
    entry.mkdir()
    np.savez(entry / "arrays.npz", fit_latents=features[:200], score_latents=features[200:])
    assert probe.main(["--entry", str(entry), "--neighbours", "", "--dims", "", "--out", str(out)]) == 0
    report = json.loads((out / "feature_neighbours.json").read_text())
    assert report["neighbour_purity"]["purity_20"] > 0.95
    assert report["neighbour_purity"]["vote_20nn_heldout_acc"] > 0.95
    assert 0.35 < report["domain"]["domain_purity_20"] < 0.65 and report["umap_gmm_fit_set"] == []
    assert "--entry" in (out / "feature_neighbours.md").read_text().splitlines()[0]
    np.savez(entry / "arrays.npz", fit_latents=features[:150], score_latents=features[150:])
    with pytest.raises(SystemExit, match="expected features of the CIFAKE split.*150 / 150"):
        probe.main(["--entry", str(entry), "--neighbours", "", "--dims", "", "--out", str(out)])


def test_domain_removal_takes_the_domain_out_of_the_features_and_keeps_the_rest():
    """domain_removal.remove_domain: "project" leaves no trace of the domain direction (a fresh
    linear read-out falls to chance) and keeps the other directions; "center" zeroes each domain's
    mean on the fit images and moves held-out images by their own domain's; "none" changes nothing."""
    from sklearn.linear_model import LogisticRegression

    probe = benchmark_module("domain_removal")
    rng = np.random.default_rng(0)
    features = rng.normal(size=(600, 6)) + np.array([0, 0, 0, 0, 0, 4.0])
    domains = rng.integers(0, 2, 600)
    features[:, 0] += np.where(domains == 1, 2.0, -2.0)
    fit, held, fit_d, held_d = features[:400], features[400:], domains[:400], domains[400:]
    assert all(a is b for a, b in zip(probe.remove_domain("none", fit, fit_d, held, held_d), (fit, held)))
    before = LogisticRegression().fit(probe.unit(fit), fit_d).score(probe.unit(held), held_d)
    x, y = probe.remove_domain("project", fit, fit_d, held, held_d)
    after = LogisticRegression().fit(x, fit_d).score(y, held_d)
    assert before > 0.9 and after < 0.65
    kept = [np.corrcoef(x[:, j], probe.unit(fit)[:, j])[0, 1] for j in range(1, 6)]
    assert min(kept) > 0.95  # the directions without the domain stay
    x, y = probe.remove_domain("center", fit, fit_d, held, held_d)
    for d in (0, 1):
        assert np.allclose(x[fit_d == d].mean(0), 0, atol=1e-12)
        mean = probe.unit(fit)[fit_d == d].mean(0)
        assert np.allclose(y[held_d == d], probe.unit(held)[held_d == d] - mean)
    with pytest.raises(ValueError, match="removal must be one of"):
        probe.remove_domain("whiten", fit, fit_d, held, held_d)


def test_colour_probe_weights_the_descriptor_by_its_share_of_the_variance():
    """colour_probe.with_colour: ratio 0 gives the standardised unit-length features alone; otherwise
    the descriptor sits beside them with `ratio` times their total variance on the fit images, and
    the held-out images go through the fit images' scalers. The descriptors read colour and place."""
    probe = benchmark_module("colour_probe")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8)
    features = rng.normal(size=(60, 8))
    fit, held = features[:40], features[40:]
    x, y = probe.with_colour(fit, held, images[:40], images[40:], "grid", 0)
    assert x.shape == (40, 8) and np.allclose(x.mean(0), 0) and np.allclose(x.std(0), 1)
    for descriptor, width in (("grid", 12), ("hist", 64), ("thumb", probe.THUMB_COMPONENTS)):
        for ratio in (0.1, 0.5):
            x, y = probe.with_colour(fit, held, images[:40], images[40:], descriptor, ratio)
            assert x.shape == (40, 8 + width) and y.shape == (20, 8 + width)
            assert np.isclose(x[:, 8:].var(0).sum(), ratio * x[:, :8].var(0).sum())
            assert np.allclose(y[:, :8], probe.with_colour(fit, held, images[:40], images[40:], "grid", 0)[1])
    red = np.zeros((2, 4, 4, 3), np.uint8)
    red[..., 0] = 255
    red[1, :2, :2] = 0  # the second image's top-left quarter is black
    assert np.allclose(probe.quarters(red)[0], [1, 0, 0] * 4)
    assert np.allclose(probe.quarters(red)[1], [0, 0, 0] + [1, 0, 0] * 3)
    assert np.allclose(probe.histogram(red, bins=2)[0], np.sqrt(np.eye(8)[4]))  # all in the (1, 0, 0) cell
    assert np.allclose(probe.histogram(red, bins=2)[1] ** 2, [0.25, 0, 0, 0, 0.75, 0, 0, 0])
    thumb = probe.thumbnail(red, side=2)
    assert thumb.shape == (2, 12) and np.allclose(thumb[1, :3], 0) and np.allclose(thumb[0, :3], [1, 0, 0])


def test_pixel_peers_cluster_fewer_images_than_their_pca_components():
    """Under 51 fitted images the peers keep one PCA component fewer than the images (PCA(50) would
    refuse them, and whitening the last component would divide by its zero variance)."""
    from conftest import two_group_images

    peers = benchmark_module("peers")
    images, _ = two_group_images(30)
    for name in ("gmm_pca50", "pca_umap_gmm"):
        outcome = peers.PEERS[name](images, images, 2, 0)
        assert outcome.labels.shape == (30,) and set(outcome.labels) <= {0, 1}, name
        assert np.isfinite(outcome.scores["nll"]).all(), name
    assert peers.pca_size(images) == 29 and peers.pca_size(np.repeat(images, 2, axis=0)) == peers.PCA_DIM


def test_variants_share_a_network_only_where_fit_would_train_the_same_one(monkeypatch):
    """quality.py trains one network per distinct model and training settings as `fit` resolves them:
    `latent_dim auto` follows the reducer (64 under UMAP for a grayscale autoencoder, 32 under PCA),
    so `reducer=pca` is no mixture-only variant there, while `mixture_seed=1` is."""
    from conftest import TINY, two_group_images

    quality = benchmark_module("quality")
    images, groups = two_group_images(60, channels=1)
    collection = quality.Labelled(images, groups, groups)
    base = {name: TINY[name] for name in ("objective", "image_size", "width", "epochs", "batch_size")}
    base |= {"members": 1, "candidates": 1}  # the latent size and the reducer: auto
    trained_as, rows, train = [], [], quality.train

    def recording_train(variant, *args, **kwargs):
        trained = train(variant, *args, **kwargs)
        trained_as.append((variant.name, trained.clusterer.config_.model.latent_dim))
        return trained

    monkeypatch.setattr(quality, "train", recording_train)
    names = ("default", "mixture_seed=1", "reducer=pca")
    runs = quality.seeded([quality.parse_variant(name) for name in names], [0])
    quality.run_aegmm(
        runs, "cifake", collection, collection, None, rows.append, base=base, only={"real_fake"}
    )
    assert trained_as == [("default", 64), ("reducer=pca", 32)]
    assert [row["variant"] for row in rows] == list(names)


def test_quality_smoke(shared_data, tmp_path, results_untouched):
    run_script(
        "quality.py",
        "--smoke",
        "--out",
        str(tmp_path),
        "--variant",
        "mixture_seed=1",
        "--variant",
        "recon_feature=1",
        "--variant",
        "features=pooled",  # the digits' autoencoders encode their pooled features once more
    )
    report = json.loads((tmp_path / "quality.json").read_text())
    assert report["settings"]["smoke"] is True
    assert report["datasets"]["cifake"]["fit_images"] == 200
    assert report["datasets"]["cifake"]["scored_images"] == 100
    assert report["datasets"]["digits"]["fit_images"] == 200
    assert (
        report["datasets"]["mnist"]["fit_images"] == 200
        and report["datasets"]["mnist"]["scored_images"] == 100
    )
    rows = [r for r in report["runs"] if "metrics" in r]
    tasks = [("cifake", "cifar10"), ("cifake", "real_fake"), ("digits", "digits"), ("mnist", "mnist")]
    methods = [("kmeans_pixels", None), ("gmm_pca50", None), ("pca_umap_gmm", None)]
    methods += [("aegmm", v) for v in ("default", "mixture_seed=1", "recon_feature=1", "features=pooled")]
    expected = {(d, t, m, v) for d, t in tasks for m, v in methods}
    assert sorted((r["dataset"], r["task"], r["method"], r.get("variant")) for r in rows) == sorted(expected)
    for row in rows:
        metrics = row["metrics"]
        assert (
            finite(metrics["acc"], 0, 1) and finite(metrics["nmi"], 0, 1) and finite(metrics["ari"], -1, 1)
        ), row
        if row["task"] == "real_fake":
            assert row["scores"], row
            assert all(
                finite(s["auroc"], 0, 1) and finite(s["separation"], 0.5, 1) for s in row["scores"].values()
            )
        if row["method"] == "aegmm":
            assert finite(row["train"]["fit"]["seconds"], 0) and finite(row["time"]["seconds"], 0)
            objective = "contrastive" if row["dataset"] == "cifake" else "reconstruction"  # auto by channels
            resolved = {k: row["train"][k] for k in ("objective", "batch_size", "epochs")}
            assert resolved == {"objective": objective, "batch_size": 32, "epochs": 1}, row["train"]
            assert row["train"]["precision"] in ("float32", "bfloat16") and row["train"]["noise"] >= 0
    aegmm_scores = next(r for r in rows if r["method"] == "aegmm" and r["task"] == "real_fake")["scores"]
    assert set(aegmm_scores) == {"nll", "uncertainty", "recon", "high_frequency"}
    assert any(r.get("method") == "clustimage" and "skipped" in r for r in report["runs"])
    markdown = (tmp_path / "quality.md").read_text()
    assert (
        markdown.startswith("# Clustering quality")
        and "Command: `python benchmarks/quality.py --smoke" in markdown
    )
    assert "**Smoke run**" in markdown and "fitted and scored on all 200" in markdown
    assert sum(line.startswith("| aegmm (") for line in markdown.splitlines()) == 4 * 4
    assert "## MNIST (K=10), held-out images" in markdown


def test_view_policy_trains_with_changed_views_on_the_chosen_tasks_only(
    shared_data, tmp_path, results_untouched, monkeypatch
):
    out = cifake_classes_smoke(
        "view_policy.py", "hue=0.1,crop_scale=0.35:1", out=tmp_path, methods="kmeans_pixels,aegmm"
    )
    assert "crop_scale=(0.35, 1.0)" in out and "hue=0.1" in out  # the policy the run trained with
    report = json.loads((tmp_path / "quality.json").read_text())
    assert report["settings"]["tasks"] == ["cifar10"]
    rows = [r for r in report["runs"] if "metrics" in r]
    assert sorted((r["task"], r["method"]) for r in rows) == [
        ("cifar10", "aegmm"),
        ("cifar10", "kmeans_pixels"),
    ]
    import aegmm.augment as augment

    monkeypatch.setattr(augment, "COLOUR", augment.COLOUR)  # the second call sets it, then refuses
    for bad, message in (
        (["hue"], "expected FIELD=VALUE"),
        (["hue=0.1", "--smoke", "--tasks", "digit"], "--tasks is a comma list of"),
    ):
        assert message in refusal("view_policy", *bad)


def test_decoupled_loss_is_nt_xent_without_the_positive_in_the_denominator():
    import torch
    import torch.nn.functional as F

    from aegmm.contrastive import nt_xent

    probe = benchmark_module("loss_probe")
    z1, z2 = torch.randn(6, 4, generator=torch.Generator().manual_seed(0)).split(3)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / 0.2
    partner = torch.tensor([3, 4, 5, 0, 1, 2])
    positive = logits[torch.arange(6), partner]
    negatives = torch.stack([logits[i][[j for j in range(6) if j not in (i, partner[i])]] for i in range(6)])
    expected = (torch.logsumexp(negatives, dim=1) - positive).mean()
    decoupled = probe.decoupled_loss(z1, z2, 0.2)
    assert torch.allclose(decoupled, expected, atol=1e-6)
    # NT-Xent adds the positive back to the denominator: log(1 + e^(pos - lse(neg))) more per view
    gap = F.softplus(positive - torch.logsumexp(negatives, dim=1)).mean()
    assert torch.allclose(nt_xent(z1, z2, 0.2) - decoupled, gap, atol=1e-5)


def test_cluster_loss_rewards_agreeing_views_and_evenly_used_clusters():
    import torch

    probe = benchmark_module("loss_probe")
    sure = torch.eye(4).repeat(8, 1) * 20  # (32, 4): confident, every cluster used 8 times
    shuffled = sure[torch.randperm(32, generator=torch.Generator().manual_seed(0))]
    collapsed = torch.zeros(32, 4)
    collapsed[:, 0] = 20  # every image in cluster 0
    assert probe.cluster_loss(sure, sure) < probe.cluster_loss(sure, shuffled)
    # one used cluster: each view's term log K - H(mean assignment) is log 4 (none when even)
    spread = probe.cluster_loss(collapsed, collapsed) - probe.cluster_loss(sure, sure)
    assert spread > 2 * math.log(4) - 0.5


def test_multiview_loss_is_nt_xent_for_two_views_and_averages_every_positive():
    import torch
    import torch.nn.functional as F

    from aegmm.contrastive import nt_xent

    probe = benchmark_module("loss_probe")
    a, b, c = torch.randn(12, 5, generator=torch.Generator().manual_seed(1)).split(4)
    assert torch.allclose(probe.multiview_loss([a, b], 0.5), nt_xent(a, b, 0.5), atol=1e-6)
    z = F.normalize(torch.cat([a, b, c]), dim=1)
    logits = (z @ z.T / 0.5).fill_diagonal_(float("-inf")).log_softmax(1)
    image = torch.arange(4).repeat(3)
    expected = torch.stack(
        [-logits[i, [j for j in range(12) if j != i and image[j] == image[i]]].mean() for i in range(12)]
    ).mean()
    assert torch.allclose(probe.multiview_loss([a, b, c], 0.5), expected, atol=1e-5)


def test_neighbour_loss_uses_the_nearest_support_vector_as_the_anchor():
    import torch
    import torch.nn.functional as F

    probe = benchmark_module("loss_probe")
    z1, z2 = F.normalize(torch.randn(8, 6, generator=torch.Generator().manual_seed(2)), dim=1).split(4)
    rows = torch.arange(4)
    # each view is its own nearest neighbour in a support set holding both: the cross-view half of NT-Xent
    own = probe.neighbour_loss(z1, z2, torch.cat([z1, z2]), 0.2)
    expected = 0.5 * (F.cross_entropy(z1 @ z2.T / 0.2, rows) + F.cross_entropy(z2 @ z1.T / 0.2, rows))
    assert torch.allclose(own, expected, atol=1e-5)
    # a support set of second views only: each first view's anchor is the second view nearest to it
    others = probe.neighbour_loss(z1, z2, z2, 0.2)
    anchors = z2[(z1 @ z2.T).argmax(1)]
    expected = 0.5 * (F.cross_entropy(anchors @ z2.T / 0.2, rows) + F.cross_entropy(z2 @ z1.T / 0.2, rows))
    assert torch.allclose(others, expected, atol=1e-5)


def test_loss_probe_trains_with_the_patched_loss(shared_data, tmp_path, results_untouched):
    out = cifake_classes_smoke("loss_probe.py", "cluster-head", "3", "0.5", out=tmp_path, methods="aegmm")
    assert "cluster head: K=3, weight 0.5" in out
    report = json.loads((tmp_path / "quality.json").read_text())
    assert [(r["task"], r["method"]) for r in report["runs"] if "metrics" in r] == [("cifar10", "aegmm")]
    for args in (["decoupled", "--cache", "/tmp/x"], ["cluster-head", "3"], ["multicrop", "4"], ["focal"]):
        assert "usage: loss_probe.py" in refusal("loss_probe", *args)


def test_warp_probe_reconstructs_from_warped_inputs_with_the_background_repeated(monkeypatch):
    import torch

    import aegmm.train as train
    from aegmm.config import TrainConfig

    probe = benchmark_module("warp_probe")
    monkeypatch.setattr(train, "_augment", train._augment)  # the patch below is undone after the test
    policy = probe.warp_policy(15.0, 0.6)
    assert not policy.flip and not policy.colour
    flat = torch.full((4, 1, 16, 16), -0.7)  # a blank page stays blank: no zeros come in at the edges
    assert torch.allclose(probe.warp(flat, policy, torch.Generator().manual_seed(0)), flat, atol=1e-6)
    image = torch.zeros(4, 1, 16, 16)
    image[:, :, 4:12, 7:9] = 1.0  # a stroke
    probe.patch_warp(15.0, 0.6)
    quiet = TrainConfig(noise=0.0)
    warped = train._augment(image, quiet, torch.Generator().manual_seed(1))
    expected = probe.warp(image, policy, torch.Generator().manual_seed(1))
    assert torch.equal(warped, expected) and not torch.allclose(warped, image, atol=0.05)
    noisy = train._augment(image, TrainConfig(noise=0.1), torch.Generator().manual_seed(1))
    assert 0.05 < (noisy - expected).std() < 0.15  # the denoising noise still comes on top


def test_warp_probe_trains_on_the_digits_and_checks_its_arguments(tmp_path, results_untouched):
    options = ["--smoke", "--out", str(tmp_path), "--datasets", "digits", "--methods", "aegmm"]
    out = run_script("warp_probe.py", "10", "0.8", *options)
    assert "rotation 10.0 degrees, crop area 0.8-1" in out
    report = json.loads((tmp_path / "quality.json").read_text())
    assert [(r["task"], r["method"]) for r in report["runs"] if "metrics" in r] == [("digits", "aegmm")]
    for args in (["10"], ["10", "1.5"], ["200", "0.8"], ["10", "0.8", "--cache", "/tmp/x"]):
        assert "usage: warp_probe.py" in refusal("warp_probe", *args)


def test_hybrid_probe_shares_gradients_in_hybrid_runs_only(monkeypatch):
    import aegmm.contrastive as contrastive

    calls = []
    monkeypatch.setattr(contrastive, "train_contrastive", lambda *args, **options: calls.append(options))
    probe = benchmark_module("hybrid_probe")
    probe.patch_shared(0.5)
    contrastive.train_contrastive("images", mode="hybrid", temperature=0.2)
    contrastive.train_contrastive("images", mode="simclr", temperature=0.2)
    assert calls == [
        {"mode": "hybrid", "temperature": 0.2, "shared_gradients": True, "reconstruction_weight": 0.5},
        {"mode": "simclr", "temperature": 0.2},
    ]


def test_hybrid_probe_trains_a_shared_hybrid_and_checks_its_weight(tmp_path, results_untouched):
    options = ["--smoke", "--out", str(tmp_path), "--datasets", "digits", "--methods", "aegmm"]
    out = run_script("hybrid_probe.py", "1.0", *options, "--no-default", "--variant", "objective=hybrid")
    assert "hybrid with shared gradients, reconstruction weight 1.0" in out
    report = json.loads((tmp_path / "quality.json").read_text())
    rows = [r for r in report["runs"] if "metrics" in r]
    assert [(r["task"], r["variant"]) for r in rows] == [("digits", "objective=hybrid")]
    for args in (["-1"], ["nan"], ["one"], ["1.0", "--cache", "/tmp/x"]):
        assert "usage: hybrid_probe.py" in refusal("hybrid_probe", *args)


def test_contrastive_options_reads_each_setting_as_its_type_and_passes_it_to_every_contrastive_run(
    monkeypatch,
):
    import aegmm.contrastive as contrastive

    calls = []
    monkeypatch.setattr(contrastive, "train_contrastive", lambda *args, **options: calls.append(options))
    probe = benchmark_module("contrastive_options")
    changes = probe.parse_changes("hidden_dim=512,projection_dim=128,schedule=constant,shared_gradients=true")
    assert changes == {
        "hidden_dim": 512,
        "projection_dim": 128,
        "schedule": "constant",
        "shared_gradients": True,
    }
    assert isinstance(changes["hidden_dim"], int)
    probe.patch({"hidden_dim": 512})
    contrastive.train_contrastive("images", mode="simclr", temperature=0.2)
    assert calls == [{"mode": "simclr", "temperature": 0.2, "hidden_dim": 512}]
    for bad in ("temperature=0.5", "hidden_dim", "width=0.5"):  # a --variant setting, no value, not a field
        with pytest.raises(SystemExit, match="expected FIELD=VALUE"):
            probe.parse_changes(bad)
    view_policy = benchmark_module("view_policy")  # the same reader: AugmentPolicy's types
    assert view_policy.parse_changes("size=24,crop_scale=0.35:1,flip=false,hue=0.1") == {
        "size": 24,
        "crop_scale": (0.35, 1.0),
        "flip": False,
        "hue": 0.1,
    }


def test_quality_seeds_runs_every_method_per_seed_and_reports_mean_and_sd(
    shared_data, tmp_path, results_untouched
):
    run_script(
        "quality.py",
        "--smoke",
        "--out",
        str(tmp_path),
        "--datasets",
        "digits",
        "--methods",
        "kmeans_pixels,aegmm",
        "--seeds",
        "3,4",
    )
    report = json.loads((tmp_path / "quality.json").read_text())
    rows = [r for r in report["runs"] if "metrics" in r]
    assert sorted((r["method"], r["seed"]) for r in rows) == [
        ("aegmm", 3),
        ("aegmm", 4),
        ("kmeans_pixels", 3),
        ("kmeans_pixels", 4),
    ]
    aegmm = [r for r in rows if r["method"] == "aegmm"]
    assert [r["variant"] for r in aegmm] == ["default", "default"]  # one variant, two seeds
    assert report["targets"]["issue"] == 13 and report["targets"]["digits_acc"] == 0.92
    markdown = (tmp_path / "quality.md").read_text()
    summary = next(r for r in table_rows(markdown) if r[0] == "aegmm (default)" and r[1] == "3,4")
    accs = [r["metrics"]["acc"] for r in aegmm]
    mean, sd = sum(accs) / 2, abs(accs[0] - accs[1]) / math.sqrt(2)
    assert summary[2] == f"{mean:.3f} ± {sd:.3f}"
    assert "## Issue 13 targets" in markdown and "margin > sd" in markdown


def test_report_averages_seeds_and_judges_the_margin_against_the_spread(tmp_path):
    report = benchmark_module("report")

    def row(method, seed, acc, nmi):
        metrics = {"acc": acc, "nmi": nmi, "ari": 0.0}
        base = {"task": "mnist", "method": method, "seed": seed, "metrics": metrics, "time": {"seconds": 1.0}}
        if method == "aegmm":
            base |= {"variant": "default", "train": {"fit": {"seconds": 10.0 * seed}}}
        return base

    rows = [row("aegmm", 1, 0.90, 0.8), row("aegmm", 2, 0.94, 0.8), row("aegmm", 3, 0.92, 0.8)]
    rows += [row("gmm_pca50", s, 0.88, 0.81) for s in (1, 2, 3)]
    means = {r["method"]: r for r in report.averaged(rows)}
    assert means["aegmm"]["metrics"]["acc"] == pytest.approx(0.92)
    assert means["aegmm"]["spread"]["acc"] == pytest.approx(0.02)  # sample sd of 0.90, 0.94, 0.92
    assert means["aegmm"]["train"]["fit"]["seconds"] == pytest.approx(20.0)
    verdicts = {
        line.split("|")[1].strip(): line.split("|")[-2].strip()
        for line in report.margin_lines(list(means.values()))[2:]
    }
    assert verdicts == {"mnist acc": "yes", "mnist nmi": "no"}  # +0.04 > 0.02; NMI below the peer


def test_speed_measures_the_default_network_with_every_auto_setting_resolved():
    speed = benchmark_module("speed")
    model, mixture = speed.default_network()
    assert (model.latent_dim, model.width, model.image_size) == (32, 0.25, 32)
    assert mixture.reducer == "pca" and isinstance(mixture.reduced_dim, int)
    assert speed.random_latents(50, model.latent_dim).shape == (50, 32)  # the full run's mixture input
    assert speed._describe(model).endswith("(the default)")


def test_speed_smoke(shared_data, tmp_path, results_untouched):
    run_script("speed.py", "--smoke", "--out", str(tmp_path))
    report = json.loads((tmp_path / "speed.json").read_text())
    assert report["network"].startswith("ModelConfig(image_size=16,")
    for matmul in (report["matmul"], report["matmul_end"]):
        assert finite(matmul["best_gflops"], 0) and matmul["best_gflops"] >= matmul["median_gflops"] > 0
    flops = report["flops"]
    assert 0 < flops["encoder_per_image"] < flops["forward_per_image"] < flops["backward_per_image"]
    assert flops["train_per_image_3x"] == 3 * flops["forward_per_image"]
    training = report["training"]
    assert training["images"] == 256 and len(training["images_per_second_per_epoch"]) == 1
    assert finite(training["images_per_second"], 0) and training["images_per_second"] > 0
    assert report["steps"]["best_images_per_second"] >= report["steps"]["median_images_per_second"] > 0
    for name, batch in (("encoding", 128), ("encoding_512", 512)):
        assert report[name]["batch_size"] == batch and report[name]["images_per_second"] > 0
    (mixture,) = report["mixture"]
    assert (
        mixture["n"] == 2000
        and mixture["gmm_reduced_dim"]["dim"] == 4
        and mixture["gmm_reduced_dim"]["n_iter"] >= 1
    )
    assert mixture["latent_mixture_full_path"]["dim"] == 8
    markdown = (tmp_path / "speed.md").read_text()
    fractions = [r for r in table_rows(markdown) if len(r) == 4 and r[3].endswith("%")]
    assert [r[0].split(",")[0] for r in fractions] == ["training"] * 3 + ["encoding"] * 2
    contrastive = report["contrastive"]
    assert contrastive["batch_size"] == 256 and finite(contrastive["images_per_second"], 0)
    assert contrastive["images_per_second"] > 0 and len(contrastive["images_per_second_per_epoch"]) == 1
    assert all(finite(float(r[3].rstrip("%")), 0) for r in fractions)
    # the contrastive loop's bound is the matmul rate of the precision it trained in
    native = native_bfloat16(torch.device("cpu"))
    assert contrastive["precision"] == ("bfloat16" if native else "float32")
    assert ("matmul_bfloat16" in report) == native
    assert f"contrastive in {contrastive['precision']}" in markdown
    if native:
        peak = max(report[m]["best_gflops"] for m in ("matmul_bfloat16", "matmul_bfloat16_end")) * 1e9
        (row,) = [r for r in fractions if "contrastive" in r[0]]
        bound = peak / (6 * flops["encoder_per_image"])
        assert row[2] == f"{bound:,.0f} img/s"


def test_profile_training_times_steps_of_the_default_network():
    """The full run's step rates (one step here), on the default network with "auto" resolved (both
    objectives build it the same way; the autoencoder's steps are the cheaper)."""
    out = run_script(
        "profile_training.py",
        "--step",
        "fp32",
        "--threads",
        "1",
        "--steps",
        "1",
        "--objective",
        "reconstruction",
    )
    rate = json.loads(out.strip().splitlines()[-1])
    assert rate["option"] == "fp32" and rate["threads"] == 1 and finite(rate["images_per_second"], 0)


def test_profile_training_combines_step_options_and_refuses_unknown_ones(tmp_path):
    """ "a+b" times a step under both options at once (what the contrastive loop does is
    bf16+channels_last); an option it does not know is refused before anything runs."""
    out = run_script("profile_training.py", "--step", "bf16+channels_last", "--threads", "1", "--steps", "1")
    rate = json.loads(out.strip().splitlines()[-1])
    assert rate["option"] == "bf16+channels_last" and "error" not in rate
    assert finite(rate["images_per_second"], 0) and rate["compile_seconds"] == 0
    script = "benchmarks/profile_training.py"
    command = [sys.executable, script, "--options", "bf16+fast", "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "expected fp32, bf16, channels_last, compile" in done.stderr
    assert "['fast']" in done.stderr and not any(tmp_path.iterdir())


@pytest.mark.parametrize("objective", ["reconstruction", "contrastive"])
def test_profile_training_smoke(shared_data, tmp_path, results_untouched, objective):
    run_script("profile_training.py", "--smoke", "--objective", objective, "--out", str(tmp_path))
    report = json.loads((tmp_path / "profile.json").read_text())
    loop = report["loop"]
    assert report["batch"] == {"reconstruction": 128, "contrastive": 256}[objective]
    assert ("augment" in report) == (objective == "contrastive")
    if objective == "contrastive":
        assert finite(report["augment"]["images_per_second"], 0) and report["augment"]["batch"] == 256
    assert loop["images"] == 256 and finite(loop["images_per_second"], 0) and loop["images_per_second"] > 0
    assert len(loop["top"]) >= 5 and all(finite(r["share"], 0, 1) for r in loop["top"])
    assert sum(r["share"] for r in loop["top"]) <= 1.0001 and finite(loop["optimizer_share"], 0, 1)
    assert any("conv" in r["op"] for r in loop["top"])
    assert [(s["option"], s["threads"]) for s in report["steps"]] == [("bf16", 1)]  # in a child process
    for step in report["steps"]:
        assert "error" not in step and finite(step["images_per_second"], 0) and step["images_per_second"] > 0
    rows = table_rows((tmp_path / "profile.md").read_text())
    assert [r[:2] for r in rows if r[0] in ("fp32", "bf16")] == [["bf16", "1"]]


def test_scale_smoke(tmp_path, results_untouched):
    run_script("scale.py", "--smoke", "--out", str(tmp_path / "scale.md"))
    report = json.loads((tmp_path / "scale.json").read_text())
    (size,) = report["sizes"]
    assert size["images"] == 2000 and size["data_mib"] == round(2000 * 32 * 32 * 3 / 2**20, 1)
    for step in ("fit", "assign"):
        assert (
            finite(size[step]["seconds"], 0) and size[step]["peak_rss_mib"] >= size[step]["peak_anon_mib"] > 0
        )
    effect = report["subsample"]
    assert (effect["full"]["fit_points"], effect["subsample"]["fit_points"]) == (5000, 1000)
    for fitted in effect.values():
        assert finite(fitted["bic_on_all_train"]) and finite(fitted["held_out_loglik_per_point"])
    scratch = tmp_path / "scratch"
    assert (scratch / "run_2000" / "config.json").is_file()
    assert len((scratch / "assign_2000.csv").read_text().splitlines()) == 1 + 2000
    assert not (scratch / "images_2000.npy").exists()
    rows = table_rows((tmp_path / "scale.md").read_text())
    assert [r[:2] for r in rows if r[0] in ("2,000", "full", "subsample")] == [
        ["2,000", "5.9"],
        ["full", "5,000"],
        ["subsample", "1,000"],
    ]


def test_cli_timings_smoke(tmp_path, results_untouched):
    run_script("cli_timings.py", "--smoke", "--out", str(tmp_path))
    report = json.loads((tmp_path / "cli_timings.json").read_text())
    commands = [row["command"] for row in report["timings"]]
    assert commands == ["aegmm --help"] + [
        f"aegmm {v} --help" for v in ("fit", "assign", "evaluate", "pack", "demo")
    ]
    assert all(finite(row["seconds"], 0) and finite(row["load_1min"], 0) for row in report["timings"])
    assert report["installed_mib"]["site_packages"] >= report["installed_mib"]["torch"] > 0
    assert "| `aegmm --help` |" in (tmp_path / "cli_timings.md").read_text()


def test_contrastive_probe_smoke(shared_data, tmp_path, results_untouched):
    run_script("contrastive_probe.py", "--smoke", "--out", str(tmp_path))
    report = json.loads((tmp_path / "probe.json").read_text())
    (evaluation,) = report["evaluations"]
    assert set(evaluation["scores"]) == {"pooled", "pooled_l2", "bottleneck", "bottleneck_l2"}
    for scores in evaluation["scores"].values():
        assert all(finite(scores[m][k], 0, 1) for m in ("kmeans", "gmm") for k in ("acc", "nmi"))
    assert [h["epoch"] for h in report["history"]] == [1] and finite(report["history"][0]["train_loss"])
    assert (tmp_path / "probe.md").read_text().startswith("#")


def test_cifake_split_smoke(shared_data, tmp_path, results_untouched):
    import numpy as np

    run_script("cifake_split.py", "--smoke", "--out", str(tmp_path))
    with np.load(tmp_path / "fit.npz") as fit, np.load(tmp_path / "heldout.npz") as held_out:
        assert fit["images"].shape == (200, 32, 32, 3) and held_out["images"].shape == (100, 32, 32, 3)
        assert fit["labels"].sum() == 100 and held_out["labels"].sum() == 50  # stratified: half FAKE
        assert list(fit["label_names"]) == ["REAL", "FAKE"] and set(fit["cifar_class"]) == set(range(10))
        assert not {bytes(i) for i in fit["images"]} & {bytes(i) for i in held_out["images"]}


def test_fit_before_after_smoke(tmp_path, results_untouched):
    run_script("fit_before_after.py", "--smoke", "--out", str(tmp_path), timeout=300)
    payload = json.loads((tmp_path / "fit_before_after.json").read_text())
    assert [r["ref"] for r in payload["runs"]] == [".", "."]  # one run per ref, interleaved
    assert all(finite(r["seconds"], 0.1) and r["summary"].startswith("fitted K=3") for r in payload["runs"])
    assert "| . | working tree |" in (tmp_path / "fit_before_after.md").read_text()


def test_umap_levers_smoke(shared_data, tmp_path, results_untouched):
    run_script("umap_levers.py", "--smoke", "--out", str(tmp_path), timeout=400)
    rows = [json.loads(line) for line in (tmp_path / "sweep.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == ["neighbours", "placement", "aegmm"]
    assert all(finite(v, 0, 1) for r in rows for k, v in r.items() if k.startswith("acc"))
    assert finite(rows[2]["held_out"]["acc"], 0, 1) and finite(rows[2]["silhouette"], -1, 1)
    assert "## placement" in (tmp_path / "sweep.md").read_text()


RULES = ("first", "silhouette", "consensus", "likelihood", "calinski", "partition_likelihood", "balance")


def test_candidate_choice_smoke(tmp_path, results_untouched):
    run_script("candidate_choice.py", "--smoke", "--out", str(tmp_path))
    rows = [json.loads(line) for line in (tmp_path / "blobs.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in rows] == [0, 1, 2] and all(len(r["labels"]) == 300 for r in rows)
    assert all(r["reduced_dim"] == 10 for r in rows)  # UMAP's output size, aegmm's own by default
    assert all(finite(r["held_out_acc"], 0, 1) and finite(r["silhouette"], -1, 1) for r in rows)
    assert all(finite(r["calinski"], 0) and finite(r["partition_likelihood"]) for r in rows)
    kept = json.loads((tmp_path / "candidates.json").read_text())
    assert [(r["candidates"], r["rule"]) for r in kept] == [(3, rule) for rule in RULES]  # 3 seeds: no 5
    assert all(r["windows"] == 1 and 0 <= r["right"] <= 1 for r in kept)
    by_rule = {r["rule"]: r for r in kept}  # one window of 3: the first window is that window's choice
    assert by_rule["first"]["first_window"] == [rows[0]["held_out_acc"]]
    assert all(r["first_window"] == [r["mean"]] for r in kept)
    assert all(
        len(r["first_window_fit_nmi"]) == 1 and finite(r["first_window_fit_nmi"][0], 0, 1) for r in kept
    )
    assert "## The first window of each file" in (tmp_path / "candidates.md").read_text()


def test_the_balance_rule_keeps_the_candidate_with_the_most_equal_clusters():
    import numpy as np

    probe = benchmark_module("candidate_choice")
    equal, merged = np.repeat(np.arange(10), 4), np.repeat(np.arange(10), [13, 3, 3, 3, 3, 3, 3, 3, 3, 3])
    window = [{"labels": merged.tolist()}, {"labels": equal.tolist()}, {"labels": [0] * 40}]
    assert probe.choose(window, "balance") is window[1]


def test_the_report_names_the_largest_cluster_and_the_classes_it_holds():
    import numpy as np

    probe = benchmark_module("candidate_choice")
    truth = np.repeat([0, 1, 2, 3], [5, 5, 5, 2])  # classes 1 and 2 share cluster 7, 1 the more often
    labels = [0] * 5 + [7] * 10 + [3] * 2
    labels[5] = 3  # one image of class 1 sits with class 3
    assert probe.largest_cluster(labels, truth) == "9 (2 + 1)"
    assert probe.largest_cluster(labels, None) == "-"


def test_the_tail_step_keeps_each_digit_in_its_long_tailed_share(tmp_path):
    import numpy as np

    probe = benchmark_module("candidate_choice")
    labels = np.repeat(np.arange(10), 180)
    latents = np.random.default_rng(0).normal(size=(1800, 4)).astype(np.float32)
    np.savez(tmp_path / "digits_encoder3.npz", fit=latents, held_out=latents, fit_labels=labels,
             held_out_labels=labels)  # fmt: skip
    probe.long_tailed(tmp_path)
    tail = np.load(tmp_path / "tail_encoder3.npz")
    assert sorted(np.bincount(tail["fit_labels"]), reverse=True) == list(
        benchmark_module("common").TAIL_SIZES
    )
    assert np.array_equal(tail["fit"], tail["held_out"]) and len(np.unique(tail["fit"], axis=0)) == 823
    rows = {tuple(r) for r in latents[labels == 0]}  # every kept vector keeps its own digit
    assert all((tuple(x) in rows) == (y == 0) for x, y in zip(tail["fit"], tail["fit_labels"]))


def test_the_pairs_step_puts_consecutive_encoders_side_by_side_with_and_without_unit_length(tmp_path):
    import numpy as np

    probe = benchmark_module("candidate_choice")
    rng = np.random.default_rng(0)
    labels = np.arange(6) % 3
    latents = {s: rng.normal(scale=s + 1.0, size=(6, 4)).astype(np.float32) for s in (4, 5)}
    for s, x in latents.items():
        np.savez(tmp_path / f"mnist_encoder{s}.npz", fit=x, held_out=x[:2], fit_labels=labels,
                 held_out_labels=labels[:2])  # fmt: skip
    probe.write_pairs(tmp_path, tmp_path / "out")
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["mnist_raw_pair4.npz", "mnist_unit_pair4.npz"]  # encoder 5 has no partner
    unit, raw = (np.load(tmp_path / "out" / f"mnist_{k}_pair4.npz") for k in ("unit", "raw"))
    halves = unit["fit"][:, :4], unit["fit"][:, 4:]
    assert all(np.allclose(np.linalg.norm(h, axis=1), 2**-0.5) for h in halves)  # each member weighs the same
    lengths = [np.linalg.norm(latents[s], axis=1) for s in (4, 5)]
    assert np.allclose(raw["fit"][:, :4], latents[4] / lengths[0].mean() / 2**0.5)  # lengths kept
    assert np.allclose(raw["held_out"][:, 4:], latents[5][:2] / lengths[1].mean() / 2**0.5)
    assert np.array_equal(raw["held_out_labels"], labels[:2])


def test_partition_likelihood_is_a_hard_assignment_gaussian_log_likelihood():
    import numpy as np
    from scipy.stats import multivariate_normal

    probe = benchmark_module("candidate_choice")
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(60, 3)), rng.normal(loc=6.0, size=(40, 3))])
    truth = np.repeat([0, 1], [60, 40])
    expected = 0.0
    for k, share in ((0, 0.6), (1, 0.4)):
        members = x[truth == k]
        cov = np.cov(members, rowvar=False, bias=True) + probe.REG_COVAR * np.eye(3)
        expected += np.sum(np.log(share) + multivariate_normal(members.mean(0), cov).logpdf(members))
    assert probe.partition_likelihood(x, truth) == pytest.approx(expected / 100, rel=1e-9)
    mixed = truth.copy()
    mixed[:30] = 1  # half of one blob joins the other
    assert probe.partition_likelihood(x, mixed) < probe.partition_likelihood(x, truth) - 0.5


@functools.cache
def report_module():
    return benchmark_module("report")


@pytest.mark.parametrize(
    "committed",
    [
        "quality.md",
        "variants_bf16/quality.md",
        "variants_6k/quality.md",
        "history/quality_before_defaults.md",
        "grayscale/quality.md",
        "grayscale_auto/quality.md",
        "grayscale_candidates/quality.md",
        "grayscale_consensus/quality.md",
        "contrastive_fp32_cl/quality.md",
        "colour_default/quality.md",
        "contrastive_20ep/quality.md",
        "contrastive_50ep/quality.md",
        "small_collections/quality.md",
        "budget_levers/width0125.md",
        "budget_levers/batch_lr.md",
        "views/small_views.md",
        "views/progressive.md",
        "crop_scale/crop008.md",
        "features/quality.md",
        "bf16_default/quality.md",
        "bf16_default/epochs20/quality.md",
        "denoising/quality.md",
        "denoising/mnist/quality.md",
        "epochs22/quality.md",
        "epochs50/quality.md",
        "epochs100/quality.md",
        "epochs100/seed1/quality.md",
        "epochs100/seed2/quality.md",
        "training_tricks/warmup/quality.md",
        "training_tricks/ema/quality.md",
        "training_tricks/zero-init/quality.md",
        "epochs100/seed2/cached/quality.md",
        "umap_dims/quality.md",
        "epochs100/seeds01_cached/quality.md",
        "epochs100/umap5_all/quality.md",
        "whiten_stem/probe_trained/quality.md",
        "whiten_stem/probe_fixed/quality.md",
        "whiten_stem/seeds012/quality.md",
        "umap_compile/default_fit/quality.md",
        "mixture_speed/gray_recheck/quality.md",
        "digits_seeds10/quality.md",
        "digits_seeds10/normalize_none/quality.md",
        "digits_seeds10/latent64/quality.md",
        "digits_levers/warp/quality.md",
        "digits_levers/warp25/quality.md",
        "digits_levers/pooled/quality.md",
        "digits_levers/hybrid_shared/quality.md",
        "mnist_seeds10/quality.md",
        "ensemble/seeds10_11/quality.md",
        "ensemble/epochs20/quality.md",
        "ensemble/end_to_end/quality.md",
        "ensemble/end_to_end_seed6/quality.md",
        "efficiency_probes/strided60.md",
        "efficiency_probes/nnclr05.md",
    ],
)
def test_report_rebuilds_committed_tables(committed, tmp_path):
    """report.py turns each committed quality JSON back into the tables of the committed markdown."""
    source = RESULTS / committed
    shutil.copy(source.with_suffix(".json"), tmp_path / "quality.json")
    assert report_module().main([str(tmp_path / "quality.json")]) == 0  # in this process
    rebuilt, original = (tmp_path / "quality.md").read_text(), source.read_text()
    assert rebuilt.splitlines()[2] == original.splitlines()[2]  # the "Command: ..." line
    rebuilt_rows, original_rows = table_rows(rebuilt), table_rows(original)
    if "AUROC high-freq" in rebuilt and "AUROC high-freq" not in original:  # older file: drop it
        header = next(r for r in rebuilt_rows if "AUROC high-freq" in r)
        drop = header.index("AUROC high-freq")
        rebuilt_rows = [r[:drop] + r[drop + 1 :] if len(r) == len(header) else r for r in rebuilt_rows]
    assert rebuilt_rows == original_rows


def test_smoke_output_folder_never_results(tmp_path):
    common = benchmark_module("common")
    assert common.output_folder(None, smoke=False) == RESULTS
    assert common.output_folder(tmp_path, smoke=True) == tmp_path
    temporary = common.output_folder(None, smoke=True)
    assert temporary.is_dir() and not temporary.is_relative_to(RESULTS) and not any(temporary.iterdir())
    temporary.rmdir()
    with pytest.raises(ValueError, match="a smoke run must not write into"):
        common.output_folder(RESULTS / "smoke", smoke=True)


@pytest.mark.parametrize("document", ["README.md", "benchmarks/what_we_tried.md"])
def test_documents_name_committed_results_files(document):
    """Every results file the README or the log of experiments cites exists, so a number's source
    can be opened."""
    import re

    text = (REPO / document).read_text()
    cited = set(re.findall(r"`([\w/.-]+\.md)`", text)) - {document}
    assert len(cited) >= 6
    missing = [c for c in cited if not (REPO / c).is_file() and not (RESULTS / c).is_file()]
    assert not missing, f"{document} cites results files that do not exist: {missing}"


def test_mixture_speed_smoke(shared_data, tmp_path, results_untouched):
    run_script("mixture_speed.py", "--smoke", "--parallel-min", "0", "--out", str(tmp_path))
    record = json.loads((tmp_path / "mixture_speed.json").read_text())
    assert record["encoder"]["fitted_here"] and (tmp_path / "run" / "config.json").exists()
    rows = [(row["n"], row["jobs"], row["parallel_min"]) for row in record["rows"]]
    assert rows == [(600, 1, 0), (600, 2, 0)]  # 600 points in 2 workers: the threshold moved to 0
    assert all(row["same_labels_as_first_row"] and finite(row["seconds"], 0) for row in record["rows"])
    assert len(record["rows"][0]["agreement"]) == 5 and not list(tmp_path.glob("*.npy"))


def test_ensemble_probe_builds_the_features_an_ensemble_run_clusters():
    """The probe's side-by-side vectors from one-network runs of seeds 0 and 1 are the features of
    the two-member run seeded 0, so its cached-encoder results stand for `--members 2`."""
    import numpy as np

    from aegmm import ImageClusterer
    from aegmm.scaling import normalizer
    from conftest import TINY, two_group_images

    probe = benchmark_module("ensemble_probe")
    images, _ = two_group_images(32)
    singles = [ImageClusterer(**(TINY | {"seed": s})).fit(images).transform(images) for s in (0, 1)]
    pair = ImageClusterer(**(TINY | {"members": 2})).fit(images).transform(images)
    assert np.allclose(np.hstack(singles), pair, atol=1e-6)  # the members' vectors as they are
    unit = normalizer("l2", 2, pair.shape[1]).transform(pair)  # what the mixture's l2 makes of them
    assert np.allclose(probe.side_by_side(singles), unit, atol=1e-6)


def test_feature_probe_reads_what_fit_clusters_and_averages_unit_length_views():
    """feature_probe.features: "pooled" and "bottleneck" are what the clusterer clusters with those
    features; a mirror-averaged reading is the same for an image and its mirror image; averaged
    readings are means of unit-length vectors, and the six-view one differs from the two-view one."""
    from aegmm import ImageClusterer
    from conftest import TINY, two_group_images

    probe = benchmark_module("feature_probe")
    images, _ = two_group_images(24)
    for kind in ("pooled", "bottleneck"):
        clusterer = ImageClusterer(**(TINY | {"features": kind})).fit(images)
        assert np.allclose(probe.features(clusterer, images, kind), clusterer.transform(images), atol=1e-5)
    mirrored = np.ascontiguousarray(images[:, :, ::-1])
    flip, flip_mirrored = (probe.features(clusterer, x, "flip_pooled") for x in (images, mirrored))
    assert np.allclose(flip, flip_mirrored, atol=1e-5)
    tta = probe.features(clusterer, images, "tta_pooled")
    norms = np.linalg.norm(np.vstack([flip, tta]), axis=1)
    assert (norms <= 1 + 1e-5).all() and (norms > 0.1).all()
    assert tta.shape == flip.shape and not np.allclose(tta, flip, atol=1e-3)
    assert probe.base_of("tta_l3l4") == "l3l4" and probe.base_of("gem") == "gem"


def test_scalings_fits_both_settings_on_each_pair_of_encoders_side_by_side(tmp_path, results_untouched):
    import numpy as np

    run_script("scalings.py", "--smoke", "--out", str(tmp_path))
    rows = [json.loads(line) for line in (tmp_path / "toy.jsonl").read_text().splitlines()]
    assert [(r["pair"], r["normalize"]) for r in rows] == [(0, "both"), (0, "l2")]  # encoder 1: no partner
    assert all(finite(r["acc"], 0, 1) and finite(r["nmi"], 0, 1) for r in rows)
    assert rows[1]["scaling"] == "l2" and rows[0]["scaling"] in ("l2", "none")
    assert rows[0]["kept"] in range(10) and rows[1]["kept"] in range(5)  # both: seeds 0-4 l2, 5-9 none
    assert "| toy | both | 1 |" in (tmp_path / "scalings.md").read_text()
    probe = benchmark_module("scalings")
    pair = probe.pair_latents(tmp_path, "toy", 0, tail=False)
    members = [np.load(tmp_path / f"toy_encoder{s}.npz")["fit"] for s in (0, 1)]
    assert np.array_equal(pair["fit"], np.hstack(members))
    assert probe.pair_latents(tmp_path, "toy", 1, tail=False) is None


def blobs_and_neighbours(per_blob: int = 30, seed: int = 0):
    """Ten well-separated 16-D blobs, their labels, and each point's 20 nearest other points."""
    import numpy as np
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(10, 16)) * 20
    labels = np.repeat(np.arange(10), per_blob)
    points = centres[labels] + rng.normal(size=(len(labels), 16))
    near = NearestNeighbors(n_neighbors=21).fit(points).kneighbors(points, return_distance=False)[:, 1:]
    return points, labels, near


def test_cluster_alternatives_vote_takes_the_most_frequent_neighbour_label():
    import numpy as np

    probe = benchmark_module("cluster_alternatives")
    labels = np.array([3, 3, 7, 1])
    assert probe.vote(labels, np.array([[0, 1, 2], [2, 3, 2], [3, 3, 0]])).tolist() == [3, 7, 1]


def test_cluster_alternatives_find_well_separated_blobs():
    from sklearn.metrics import adjusted_rand_score

    probe = benchmark_module("cluster_alternatives")
    points, labels, near = blobs_and_neighbours()
    merged = probe.over_merged(points, points, near, components=20, seed=0)  # 20 pieces back to 10
    assert adjusted_rand_score(labels, merged) > 0.95
    scan = probe.scan_head(points, near, seed=0, heads=2, epochs=300)
    assert adjusted_rand_score(labels, scan(points)) > 0.9
    started = probe.gmm_from_labels(points, labels, seed=0)  # EM from the right groups stays there
    assert adjusted_rand_score(labels, started.predict(points)) == 1.0
    assert adjusted_rand_score(labels, probe.spectral(near, seed=0)) > 0.95


def test_self_label_targets_keep_only_sure_or_neighbour_backed_assignments():
    import numpy as np

    probe = benchmark_module("self_label")
    proba = np.array([[0.95, 0.05], [0.6, 0.4], [0.02, 0.98]])
    assert probe.targets_from(proba, threshold=0.9).tolist() == [0, -1, 1]
    points, labels, _ = blobs_and_neighbours()
    given = labels.copy()
    wrong = np.arange(0, len(labels), 10)  # 3 points of every blob given the next blob's label
    given[wrong] = (labels[wrong] + 1) % 10
    targets = probe.neighbour_targets(points, given, keep=0.5)
    chosen = targets >= 0
    assert chosen.mean() >= 0.5 and set(targets[chosen]) == set(range(10))  # ties at the cut all kept
    assert not chosen[wrong].any() and (targets[chosen] == labels[chosen]).all()


def test_self_label_class_weights_are_inverse_counts_with_mean_one():
    import numpy as np

    probe = benchmark_module("self_label")
    weights = probe.class_weights(np.array([0, 0, 0, 1, -1, -1]), k=3).numpy()
    assert weights[2] == 0  # no targets in cluster 2
    assert np.isclose(weights[1], 3 * weights[0]) and np.isclose(weights[:2].mean(), 1.0)


def test_the_long_tail_scales_every_count_and_keeps_each_image_in_its_class():
    import numpy as np

    common = benchmark_module("common")
    labels = np.repeat(np.arange(10), 180)
    full, quarter = common.tail_indices(labels, 0), common.tail_indices(labels, 0, 0.25)
    assert len(full) == 823 and len(quarter) == 207 and len(np.unique(quarter)) == 207
    assert sorted(np.bincount(labels[quarter]), reverse=True) == [
        max(2, round(s / 4)) for s in common.TAIL_SIZES
    ]
    shares = np.bincount(labels[full]), np.bincount(labels[quarter])
    assert np.argmax(shares[0]) == np.argmax(shares[1])  # the same digit leads at every scale (seed 0)


def test_device_check_runs_the_cuda_tests_and_the_longer_cifake_training(shared_data, tmp_path):
    """device_check.sh, the one call a lent GPU machine gets, in its SMOKE form on this machine:
    it runs the CUDA tests (skipped without a GPU), then quality.py at the defaults and at EPOCHS,
    and leaves every log and table in OUT."""
    env = os.environ | {
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OUT": str(tmp_path),
        "SMOKE": "1",
        "EPOCHS": "2",
        "PYTHON": sys.executable,
        "AEGMM_SHARED_DATA": str(shared_data),  # not a .devdata/ that device_prepare.sh left here
    }
    command = ["bash", "benchmarks/device_check.sh"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    log = (tmp_path / "check.log").read_text()
    assert done.returncode == 0, log + done.stderr[-2000:]
    assert "CUDA tests: exit 0" in log and "CIFAKE: exit 0" in log
    tests = (tmp_path / "gpu_tests.log").read_text()
    assert ("passed" if torch.cuda.is_available() else "skipped") in tests, tests
    report = json.loads((tmp_path / "quality" / "quality.json").read_text())
    rows = [r for r in report["runs"] if "metrics" in r]
    assert sorted((r["variant"], r["train"]["epochs"]) for r in rows) == [("default", 1), ("epochs=2", 2)]
    assert all(r["dataset"] == "cifake" and r["task"] == "cifar10" for r in rows)


def test_optimizer_probe_starts_every_session_with_sgd_at_the_runs_learning_rate(monkeypatch):
    from aegmm.config import ModelConfig
    from aegmm.nn import AutoEncoder
    from aegmm.train import Session

    probe = benchmark_module("optimizer_probe")
    monkeypatch.setattr(Session, "start", probe.sgd_start(0.9, 5e-4))
    images = np.random.default_rng(0).integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    config = TrainConfig(lr=0.05, device="cpu", epochs=1, batch_size=4)
    model = ModelConfig(image_size=16, latent_dim=4, width=0.125)
    session = Session.start(images, config, "reconstruction", lambda: AutoEncoder(model), None)
    optimizer = session.optimizer
    assert type(optimizer) is torch.optim.SGD
    assert (optimizer.defaults["lr"], optimizer.defaults["momentum"]) == (0.05, 0.9)
    assert optimizer.defaults["weight_decay"] == 5e-4
    assert {id(p) for p in optimizer.param_groups[0]["params"]} == {id(p) for p in session.model.parameters()}


def test_optimizer_probe_trains_with_sgd_and_checks_its_numbers(shared_data, tmp_path, results_untouched):
    out = cifake_classes_smoke("optimizer_probe.py", "0.9", "0", out=tmp_path, methods="aegmm")
    assert "SGD in place of Adam: momentum 0.9, weight decay 0.0" in out
    rows = [r for r in json.loads((tmp_path / "quality.json").read_text())["runs"] if "metrics" in r]
    assert [(r["task"], r["variant"]) for r in rows] == [("cifar10", "default")]
    probe = benchmark_module("optimizer_probe")
    for args in (["0.9"], ["1.5", "0"], ["0.9", "nan"], ["0.9", "0", "--cache", "/tmp/x"]):
        with pytest.raises(SystemExit, match="usage: optimizer_probe.py"):
            probe.main(args)  # refused before anything is patched or trained


def test_training_probe_tricks_change_what_they_name_and_nothing_else(monkeypatch):
    from aegmm import contrastive
    from aegmm.config import ModelConfig
    from aegmm.nn.autoencoder import Encoder
    from aegmm.preprocess import Normalizer
    from conftest import two_group_images

    probe = benchmark_module("training_probe")
    images, _ = two_group_images(36)  # 32 training images: 2 steps of 16 an epoch, 4 in all
    normalizer = Normalizer.fit(images)
    model = ModelConfig(image_size=16, width=0.125, latent_dim=8)
    train = TrainConfig(epochs=2, batch_size=16, device="cpu", seed=0)
    patched = [where for _, _, where, _ in probe.TRICKS.values()]

    def fit(trick: str | None = None, value: float = 0.0) -> tuple[list[torch.Tensor], list[float]]:
        lrs = []
        with monkeypatch.context() as m:
            if trick is not None:
                for target, name in patched:
                    m.setattr(target, name, getattr(target, name))  # restored when the context ends
                probe.patch(trick, value)
            set_lr = contrastive._Run._set_lr

            def recorded(self, epoch, step, steps):
                set_lr(self, epoch, step, steps)
                lrs.append(self.optimizer.param_groups[0]["lr"])

            m.setattr(contrastive._Run, "_set_lr", recorded)
            net, _ = contrastive.train_contrastive(images, model, train, normalizer, progress=False)
        return [t.detach().clone() for t in net.state_dict().values()], lrs

    plain, plain_lrs = fit()
    _, warm_lrs = fit("warmup", 1.5)
    assert warm_lrs == pytest.approx([lr * r for lr, r in zip(plain_lrs, (1 / 3, 2 / 3, 1, 1))])
    same, _ = fit("ema", 1e-12)  # an average that forgets at once: the last weights, statistics too
    assert all(torch.allclose(a.float(), b.float()) for a, b in zip(same, plain))
    averaged, averaged_lrs = fit("ema", 0.5)
    assert averaged_lrs == plain_lrs and not all(torch.equal(a, b) for a, b in zip(averaged, plain))

    with monkeypatch.context() as m:
        m.setattr(Encoder, "__init__", probe.zero_init_encoder())
        torch.manual_seed(0)
        zeroed = Encoder(model.resolve("contrastive"))
    torch.manual_seed(0)
    default = Encoder(model.resolve("contrastive"))
    blocks = [block for stage in zeroed.stages for block in stage]
    assert len(blocks) == 8 and all(not block.bn2.weight.any() for block in blocks)
    for (name, a), b in zip(zeroed.state_dict().items(), default.state_dict().values()):
        assert torch.equal(a, b) or name.endswith("bn2.weight"), name
    refused = (
        ["warmup"],
        ["ema", "1"],
        ["zero-init", "2"],
        ["whiten-stem", "3"],
        ["lars", "1"],
        ["warmup", "2", "--cache", "/x"],
    )
    for args in refused:
        with pytest.raises(SystemExit, match="usage: training_probe.py"):
            probe.main(args)  # refused before anything is patched or trained


@pytest.mark.parametrize("mode, stem_init", [(1, "whiten"), (2, "whiten-fixed")])
def test_training_probe_whiten_stem_trains_the_library_option(monkeypatch, mode, stem_init):
    """The probe's patch (which trained the committed whiten_stem rows) and the library's
    `stem_init` train the same network, weight for weight."""
    from aegmm import contrastive
    from aegmm.config import ModelConfig
    from aegmm.preprocess import Normalizer
    from conftest import two_group_images

    probe = benchmark_module("training_probe")
    images, _ = two_group_images(36)
    normalizer = Normalizer.fit(images)
    model = ModelConfig(image_size=16, width=0.125, latent_dim=8)
    train = TrainConfig(epochs=2, batch_size=16, device="cpu", seed=0)

    def fit(**options):
        return contrastive.train_contrastive(images, model, train, normalizer, progress=False, **options)[0]

    with monkeypatch.context() as m:
        m.setattr(contrastive._Run, "train_epoch", contrastive._Run.train_epoch)  # restored after
        probe.patch("whiten-stem", mode)
        patched = fit()
    library, plain = fit(stem_init=stem_init), fit()
    weights = list(zip(*(n.state_dict().values() for n in (patched, library, plain))))
    assert all(torch.equal(a, b) for a, b, _ in weights)
    assert not all(torch.equal(a, c) for a, _, c in weights)


def test_cache_keys_of_networks_trained_before_a_setting_existed_stay_the_same():
    """A setting added later, at the value that kept the old behaviour, leaves the cache key as it
    was, so encoders cached before it existed are found; any other value keys a new network."""
    variants = benchmark_module("variants")
    before = {"model": {"width": 0.25}, "train": {"epochs": 22, "seed": 0}}
    random = {"model": {"width": 0.25}, "train": {"epochs": 22, "seed": 0, "stem_init": "random"}}
    whiten = {"model": {"width": 0.25}, "train": {"epochs": 22, "seed": 0, "stem_init": "whiten"}}
    assert variants._keyed(random) == variants._keyed(before) == before
    assert variants._keyed(whiten) == whiten and random["train"]["stem_init"] == "random"  # not changed


def test_umap_compile_smoke(tmp_path, results_untouched):
    run_script("umap_compile.py", "--smoke", "--out", str(tmp_path))
    report = json.loads((tmp_path / "umap_compile.json").read_text())
    (row,) = report["rows"]
    assert (row["mode"], row["process"], report["points"]) == ("cached", 1, 200)
    assert finite(row["seconds"], 0) and len(row["sha256"]) == 16
    markdown = (tmp_path / "umap_compile.md").read_text()
    assert f"| cached | 1 | {row['seconds']:.2f} |" in markdown and "identical: yes" in markdown
