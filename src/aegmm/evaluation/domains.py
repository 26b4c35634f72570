"""Domains (real vs simulated, REAL vs FAKE, ...): a mixture per domain, the KL divergence between
them, and how well likelihoods tell the domains apart.

Which numbers used the domain labels to fit a model:

- the per-domain mixtures (their BIC and AIC, and the KL divergences): yes, each is fitted on the
  images of one domain;
- ``auroc_nll``: no, the main model never saw a domain label; labels only score the AUROC;
- ``auroc_one_class``: partly, its mixture is fitted on images known to be from the first domain
  (half of them), and scored on the other half and on every image of the other domains;
- ``auroc_scores``: no, per-image statistics (``image_scores``) that fit nothing at all.

Orientation of the AUROCs: the positive class is "not the first domain" (the second domain when
there are two, one-vs-rest for the first domain otherwise). The mixtures' score is the negative
log-likelihood of an image (higher = more unusual): above 0.5, the other domains look less likely
than the first. Each image score has its own orientation, fixed beforehand (see
``image_scores``). Every AUROC is reported as computed, never flipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.mixture import GaussianMixture

from aegmm.config import MixtureConfig
from aegmm.evaluation import plots
from aegmm.evaluation.image_scores import SCORE_NAMES
from aegmm.evaluation.metrics import gmm_information, kl_matrix, mc_kl_divergence, roc_auc
from aegmm.mixture import make_gmm

MAX_DOMAINS = 10  # more domains than this are not analysed (the KL matrix grows as D^2)
KL_SAMPLES = 20_000  # Monte Carlo sample size of each KL divergence
HISTOGRAM_PAIRS = 6  # (P, Q) pairs whose log-ratio histograms are kept at most
LOGLIK_PANELS = 3  # domain mixtures whose log-likelihood histograms are kept at most


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
) -> DomainAnalysis:
    """Every domain measurement on ``features`` whose domain is ``codes`` (0..D-1, D >= 2).

    ``scores``: label-free per-image scores (name -> (N,) values, higher = expected positive),
    whose AUROCs are reported next to the mixtures'.
    """
    names, k = list(names), int(gmm.n_components)
    mixtures = {name: _fit(features[codes == j], k, config, seed) for j, name in enumerate(names)}
    info = [gmm_information(mixtures[name], features[codes == j]) for j, name in enumerate(names)]
    _, kl, stderr = kl_matrix(mixtures, n_samples=KL_SAMPLES, seed=seed)
    detection, roc = _detection(features, codes, names, gmm, config, seed, scores or {})
    counts = np.stack([np.bincount(clusters[codes == j], minlength=k) for j in range(len(names))], axis=1)
    metrics = {
        "names": names,
        "counts": [int(np.sum(codes == j)) for j in range(len(names))],
        "bic": [i["bic"] for i in info],
        "aic": [i["aic"] for i in info],
        "kl": kl,
        "kl_stderr": stderr,
        "kl_n_samples": KL_SAMPLES,
        **detection,
        "cluster_counts": counts.tolist(),
    }
    return DomainAnalysis(
        metrics=metrics,
        loglik=_loglik_groups(features, codes, names, gmm, mixtures),
        log_ratios=_log_ratios(mixtures, seed),
        roc=roc,
        counts=counts,
    )


def _log_ratios(mixtures: dict[str, GaussianMixture], seed: int) -> dict[str, np.ndarray]:
    """Per-sample log ratios of the first pairs, drawn exactly as ``kl_matrix`` draws them."""
    names = list(mixtures)
    seeds = np.random.SeedSequence(seed).spawn(len(names))  # the same children kl_matrix spawns
    ratios = {}
    for i, p in enumerate(names):
        for q in names:
            if q != p and len(ratios) < HISTOGRAM_PAIRS:
                kl = mc_kl_divergence(mixtures[p], mixtures[q], KL_SAMPLES, seed=seeds[i])
                ratios[f"KL({p} || {q}) = {kl['kl']:.3g}"] = kl["log_ratios"]
    return ratios


def _loglik_groups(features, codes, names, gmm, mixtures) -> dict[str, dict[str, np.ndarray]]:
    models = {"the main mixture": gmm}
    models.update({f"the mixture of {name}": mixtures[name] for name in names[:LOGLIK_PANELS]})
    return {
        title: {name: model.score_samples(features[codes == j]) for j, name in enumerate(names)}
        for title, model in models.items()
    }


def positive_class(names: Sequence[str]) -> str:
    """The name of the positive class of both AUROCs: every domain but the first."""
    return str(names[1]) if len(names) == 2 else f"not {names[0]}"


def _detection(features, codes, names, gmm, config, seed, scores) -> tuple[dict, dict]:
    """AUROCs (and ROC inputs) of the main model's NLL, of a mixture of one domain's images, and
    of each label-free per-image score."""
    positive = codes != 0
    nll = -gmm.score_samples(features)
    first = np.random.default_rng(seed).permutation(np.flatnonzero(~positive))
    fit, held_out = first[: len(first) // 2], first[len(first) // 2 :]
    one_class = _fit(features[fit], int(gmm.n_components), config, seed)
    scored = np.sort(np.concatenate([held_out, np.flatnonzero(positive)]))
    one_nll = -one_class.score_samples(features[scored])
    metrics = {
        "positive": positive_class(names),
        "auroc_nll": roc_auc(nll, positive),
        "auroc_one_class": roc_auc(one_nll, positive[scored]),
        "one_class": {"fit_domain": str(names[0]), "n_fit": int(len(fit)), "n_scored": int(len(scored))},
        "auroc_scores": {name: roc_auc(values, positive) for name, values in scores.items()},
    }
    roc = {
        "main mixture, no labels": (nll, positive),
        f"mixture of half the {names[0]} images": (one_nll, positive[scored]),
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
