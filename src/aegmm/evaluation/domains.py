"""Domains (real vs simulated, REAL vs FAKE, ...): a mixture per domain, the KL divergence between
them, and how well likelihoods tell the domains apart.

Which numbers used the domain labels to fit a model:

- the per-domain mixtures (their BIC and AIC, and the KL divergences): yes, each is fitted on the
  images of one domain;
- ``auroc_nll``: no, the main model never saw a domain label; labels only score the AUROC;
- ``auroc_one_class``: partly, its mixture is fitted on images known to be from the negative
  (real) domains (half of them), and scored on the other half and on every positive image;
- ``auroc_scores``: no, per-image statistics (``image_scores``) that fit nothing at all.

Orientation of the AUROCs: the positive class is one domain, the generated (simulated, fake)
one, against all the others. ``positive_domain`` decides which from the names alone (never from
their order): the one the user names (``--positive``), else the one whose name marks generated
images (FAKE, generated, synthetic, simulated, AI, SD, GAN, diffusion, ...), else (no name or
several decide it) the last in name order, and the metrics say which rule decided. The
mixtures' score is the negative log-likelihood of an image (higher = more unusual): above 0.5,
positive images look less likely than the others. Each image score has its own orientation,
fixed beforehand (see ``image_scores``). Every AUROC is reported as computed, never flipped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.mixture import GaussianMixture

from aegmm.config import MixtureConfig
from aegmm.evaluation import plots
from aegmm.evaluation.image_scores import SCORE_NAMES
from aegmm.evaluation.likelihood import gmm_n_parameters
from aegmm.evaluation.metrics import gmm_information, kl_matrix, roc_auc
from aegmm.mixture import make_gmm

MAX_DOMAINS = 10  # more domains than this are not analysed (the KL matrix grows as D^2)
KL_SAMPLES = 20_000  # Monte Carlo sample size of each KL divergence
HISTOGRAM_PAIRS = 6  # (P, Q) pairs whose log-ratio histograms are kept at most
LOGLIK_PANELS = 3  # domain mixtures whose log-likelihood histograms are kept at most
# words (case-insensitive, whole words of a domain name) that mark generated images
GENERATED_WORDS = frozenset({
    "fake", "fakes", "deepfake", "deepfakes", "generated", "gen", "synthetic", "synth", "simulated",
    "simulation", "sim", "ai", "sd", "gan", "gans", "diffusion", "midjourney", "dalle", "rendered",
    "render", "cgi",
})  # fmt: skip


@dataclass
class DomainAnalysis:
    metrics: dict  # the "domains" object of metrics.json (without "source")
    loglik: dict[str, dict[str, np.ndarray]]  # mixture -> {domain: log-likelihood of its images}
    log_ratios: dict[str, np.ndarray]  # "KL(P || Q)" -> per-sample log p(x) - log q(x), x ~ P
    roc: dict[str, tuple[np.ndarray, np.ndarray]]  # detector -> (scores, is_positive)
    counts: np.ndarray  # images per (cluster, domain)


def min_images(k: int) -> int:
    """Images a domain needs for its own K-component mixture and the half-split one-class fit."""
    return max(2 * k, 10)


def select_domains(
    codes: np.ndarray, names: Sequence[str], k: int
) -> tuple[np.ndarray, list[str], list[str]]:
    """Renumber ``codes`` over the domains with enough images (the others get -1).

    Returns the new codes, the names of the kept domains, and a note per domain left out.
    """
    need, kept, notes = min_images(k), [], []
    for i, name in enumerate(names):
        count = int(np.sum(codes == i))
        if count >= need:
            kept.append(i)
        elif count:
            notes.append(
                f"Domain {name!r} has {count} images, fewer than the {need} a K={k} mixture of its own "
                "needs; it is left out of the domain analysis."
            )
    renumbered = np.full(len(codes), -1, dtype=np.int64)
    for j, i in enumerate(kept):
        renumbered[codes == i] = j
    return renumbered, [str(names[i]) for i in kept], notes


def _fit(x: np.ndarray, k: int, config: MixtureConfig, seed: int) -> GaussianMixture:
    return make_gmm(k, config, seed).fit(x)


def analyse_domains(
    features: np.ndarray,
    codes: np.ndarray,
    names: Sequence[str],
    gmm: GaussianMixture,
    clusters: np.ndarray,
    config: MixtureConfig,
    seed: int = 0,
    scores: dict[str, np.ndarray] | None = None,
    positive: str | None = None,
) -> DomainAnalysis:
    """Every domain measurement on ``features`` whose domain is ``codes`` (0..D-1, D >= 2).

    ``scores``: label-free per-image scores (name -> (N,) values, higher = expected positive),
    whose AUROCs are reported next to the mixtures'. ``positive``: the name of the positive
    (generated) domain, else ``positive_domain`` decides it from the names.
    """
    names, k = list(names), int(gmm.n_components)
    mixtures = {name: _fit(features[codes == j], k, config, seed) for j, name in enumerate(names)}
    info = [gmm_information(mixtures[name], features[codes == j]) for j, name in enumerate(names)]
    n_parameters = info[0]["n_parameters"]  # the same K, covariance type and features for each
    ratios: dict[str, np.ndarray] = {}

    def keep(p: str, q: str, log_ratios: np.ndarray) -> None:  # the first pairs, for the histograms
        if len(ratios) < HISTOGRAM_PAIRS:
            ratios[f"KL({p} || {q}) = {float(np.mean(log_ratios)):.3g}"] = log_ratios

    _, kl, stderr = kl_matrix(mixtures, n_samples=KL_SAMPLES, seed=seed, on_pair=keep)
    orientation = positive_domain(names, positive)
    detection, roc = _detection(features, codes, names, gmm, config, seed, scores or {}, orientation)
    counts = np.stack([np.bincount(clusters[codes == j], minlength=k) for j in range(len(names))], axis=1)
    metrics = {
        "names": names,
        "counts": [int(np.sum(codes == j)) for j in range(len(names))],
        "bic": [i["bic"] for i in info],
        "aic": [i["aic"] for i in info],
        "kl": kl,
        "kl_stderr": stderr,
        "kl_n_samples": KL_SAMPLES,
        "n_parameters": n_parameters,
        "unreliable": [name for j, name in enumerate(names) if np.sum(codes == j) < n_parameters],
        **detection,
        "cluster_counts": counts.tolist(),
    }
    return DomainAnalysis(
        metrics=metrics,
        loglik=_loglik_groups(features, codes, names, gmm, mixtures),
        log_ratios=ratios,
        roc=roc,
        counts=counts,
    )


def _loglik_groups(features, codes, names, gmm, mixtures) -> dict[str, dict[str, np.ndarray]]:
    models = {"the main mixture": gmm}
    models.update({f"the mixture of {name}": mixtures[name] for name in names[:LOGLIK_PANELS]})
    return {
        title: {name: model.score_samples(features[codes == j]) for j, name in enumerate(names)}
        for title, model in models.items()
    }


@dataclass(frozen=True)
class Orientation:
    positive: int  # index of the positive domain in the names
    rule: str  # "requested" (--positive), "name" (it names generated images) or "fallback"
    reason: str  # one sentence for the report


def positive_domain(names: Sequence[str], requested: str | None = None) -> Orientation:
    """Which domain is the positive (generated) class of every AUROC, decided from names only."""
    names = [str(n) for n in names]
    if requested is not None:
        matches = [i for i, n in enumerate(names) if n.casefold() == str(requested).casefold()]
        if not matches:
            raise ValueError(
                f"--positive must name one of the domains ({', '.join(names)}), got {requested!r}"
            )
        return Orientation(matches[0], "requested", f"{names[matches[0]]} was named with --positive")
    marked = [i for i, n in enumerate(names) if GENERATED_WORDS & set(re.findall(r"[a-z]+", n.casefold()))]
    if len(marked) == 1:
        return Orientation(marked[0], "name", f"its name, {names[marked[0]]}, marks generated images")
    last = max(range(len(names)), key=lambda i: names[i])
    why = "no domain name marks" if not marked else f"{len(marked)} domain names mark"
    return Orientation(
        last,
        "fallback",
        f"{why} generated images, so {names[last]} (the last in name order) was taken; "
        "choose with --positive NAME",
    )


def _detection(features, codes, names, gmm, config, seed, scores, orientation) -> tuple[dict, dict]:
    """AUROCs (and ROC inputs) of the main model's NLL, of a mixture of the negative domains'
    images, and of each label-free per-image score; positive = the domain ``orientation`` names."""
    positive = codes == orientation.positive
    negatives = [str(n) for i, n in enumerate(names) if i != orientation.positive]
    negative = negatives[0] if len(negatives) == 1 else f"not {names[orientation.positive]}"
    nll = -gmm.score_samples(features)
    rest = np.random.default_rng(seed).permutation(np.flatnonzero(~positive))
    fit, held_out = rest[: len(rest) // 2], rest[len(rest) // 2 :]
    one_class = _fit(features[fit], int(gmm.n_components), config, seed)
    scored = np.sort(np.concatenate([held_out, np.flatnonzero(positive)]))
    one_nll = -one_class.score_samples(features[scored])
    metrics = {
        "positive": str(names[orientation.positive]),
        "negative": negative,
        "positive_rule": orientation.rule,
        "positive_reason": orientation.reason,
        "auroc_nll": roc_auc(nll, positive),
        "auroc_one_class": roc_auc(one_nll, positive[scored]),
        "one_class": {
            "fit_domain": negative,
            "n_fit": int(len(fit)),
            "n_scored": int(len(scored)),
            "n_parameters": gmm_n_parameters(one_class),
        },
        "auroc_scores": {name: roc_auc(values, positive) for name, values in scores.items()},
    }
    roc = {
        "main mixture, no labels": (nll, positive),
        f"mixture of half the {negative} images": (one_nll, positive[scored]),
    }
    roc |= {SCORE_NAMES.get(name, name): (values, positive) for name, values in scores.items()}
    return metrics, roc


def domain_figures(analysis: DomainAnalysis, names: Sequence[str]) -> dict:
    """The domain figures by report name: log-likelihoods, KL log ratios, cluster shares, ROC."""
    loglik, axes = plots.panels(len(analysis.loglik), size=(5.0, 3.8), ncols=2)
    for ax, (model, groups) in zip(axes, analysis.loglik.items()):
        plots.histograms(groups, title=f"Log-likelihood under {model}", xlabel="log-likelihood", ax=ax)
    ratios, axes = plots.panels(len(analysis.log_ratios), size=(5.0, 3.8), ncols=2)
    for ax, (title, values) in zip(axes, analysis.log_ratios.items()):
        plots.histograms({"x ~ P": values}, title=title, xlabel="log p(x) - log q(x)", mark_means=True, ax=ax)
    return {
        "domain_loglik": loglik,
        "kl_log_ratios": ratios,
        "domain_shares": plots.domain_shares(analysis.counts, names),
        "roc": plots.roc_curves(analysis.roc),
    }
