"""The keys of metrics.json, as ``aegmm evaluate`` writes it.

metrics.json (schema_version 2)
-------------------------------
Nested keys are nested JSON objects; numbers are finite (null only where a value could not be
computed, such as the reconstructions of a contrastive run, whose decoder was never trained).
Log-likelihoods are natural logs of densities of the features (higher is better); BIC and AIC:
lower is better. Keys marked [labels] exist only when the images have labels;
[domains] only when they have two or more domains (explicit domains, else the labels act as
domains) with enough images each; [auto K] only when the run chose K by BIC on its training images;
[decoder] only when the encoder has a trained decoder (every objective but contrastive).

    schema_version                 int: 2; bumped when a key changes meaning or is removed
    data                           str: what was evaluated (path, builtin name or ImageSet source)
    n_images                       int: images evaluated
    skipped                        int: files of DATA that could not be decoded (not evaluated)
    k                              int: components (clusters) of the saved mixture
    covariance_type                str: covariance type of the mixture (sklearn's name)
    n_features                     int: dimensions of the features
    seconds                        float: wall time of the evaluation
    objective                      str: how the encoder learned: reconstruction, contrastive or hybrid
    members                        int: autoencoders whose vectors the mixture clusters side by side
    reconstruction_mse             float: MSE of the reconstructions, pixels in [0, 1]; contrastive: null
    psnr                           float: 10 log10(1 / reconstruction_mse) dB (max 100); contrastive: null
    gmm.log_likelihood             float: total log-likelihood of the features, saved mixture
    gmm.mean_log_likelihood        float: the same per image
    gmm.bic                        float: BIC of the saved mixture on the features (= gmm_.bic)
    gmm.aic                        float: AIC of the saved mixture on the features (= gmm_.aic)
    gmm.n_parameters               int: free parameters of the mixture
    gmm.cv_loglik                  list of 5 floats: mean held-out log-likelihood per image per fold
    gmm.cv_loglik_mean             float: mean of gmm.cv_loglik
    gmm.bic_seeds.mean             float: mean BIC of mixtures refitted with 10 seeds (n_init=1)
    gmm.bic_seeds.std              float: their standard deviation (ddof=0)
    gmm.bic_seeds.values           list of 10 floats: each seed's BIC
    gmm.refit.log_likelihood       float: log-likelihood of a mixture refitted on the features
    gmm.refit.bic                  float: its BIC
    gmm.refit.aic                  float: its AIC
    gmm.information_curve.k        list of int: K values around the model's K
    gmm.information_curve.bic      list of floats: BIC of a mixture refitted with each K
    gmm.information_curve.aic      list of floats: AIC of a mixture refitted with each K
    gmm.training_bic_curve.k       list of int: [auto K] K values tried when fitting the run
    gmm.training_bic_curve.bic     list of floats: [auto K] their BIC on the training images
    gmm.training_candidates.seed   list of int: [candidates > 1] seeds of the mixtures fitted
    gmm.training_candidates.rule       "agreement" or "balance": which rule kept one (--candidate-rule)
    gmm.training_candidates.agreement  list of floats: each one's mean ARI with the others (max kept
                                       under agreement)
    gmm.training_candidates.evenness   list of floats: each one's cluster sizes' evenness, 1 for equal
                                       sizes (max kept under balance; absent in runs saved before it)
    gmm.training_candidates.scaling    list of str: [normalize both] each one's scaling, l2 or none
    gmm.training_candidates.kept       int: [normalize both] the seed kept: the rule's pick under
                                       each scaling, then the more even of the two
    kmeans.log_likelihood          float: K-Means (same K, same features) as a likelihood model
    kmeans.mean_log_likelihood     float: the same per image
    kmeans.bic                     float: its BIC (formulas: likelihood.KMEANS_FORMULAS)
    kmeans.aic                     float: its AIC
    kmeans.n_parameters            int: K*D + 1 + (K - 1)
    kmeans.cv_loglik               list of 5 floats: mean held-out log-likelihood per image per fold
    kmeans.cv_loglik_mean          float: mean of kmeans.cv_loglik
    labels.names                   list of str: [labels] label names
    labels.acc                     float: [labels] Hungarian-matched accuracy of the clusters
    labels.nmi                     float: [labels] normalised mutual information
    labels.ari                     float: [labels] adjusted Rand index
    labels.purity                  float: [labels] purity
    kmeans_latent.acc              float: [labels] the same four for K-Means on the features
    kmeans_latent.nmi              float: [labels]
    kmeans_latent.ari              float: [labels]
    kmeans_latent.purity           float: [labels]
    kmeans_pixels.acc              float: [labels] the same four for K-Means on raw pixels
    kmeans_pixels.nmi              float: [labels]
    kmeans_pixels.ari              float: [labels]
    kmeans_pixels.purity           float: [labels]
    kmeans_pixels.n_fit            int: [labels] images K-Means on pixels was fitted on (capped)
    domains.source                 str: [domains] "domains" (explicit) or "labels" (labels as domains)
    domains.names                  list of str: [domains] the D domains analysed, in order
    domains.counts                 list of D int: [domains] images per domain
    domains.bic                    list of D floats: [domains] BIC of each domain's own mixture
    domains.aic                    list of D floats: [domains] AIC of each domain's own mixture
    domains.kl                     D x D floats: [domains] KL(row P || column Q), Monte Carlo
    domains.kl_stderr              D x D floats: [domains] standard errors of domains.kl
    domains.kl_n_samples           int: [domains] samples drawn from P for each KL
    domains.n_parameters           int: [domains] free parameters of each domain's mixture
    domains.unreliable             list of str: [domains] domains with fewer images than that
    domains.positive               str: [domains] positive class of every AUROC (the generated domain)
    domains.negative               str: [domains] the other class: a domain name, or "not POSITIVE"
    domains.positive_rule          str: [domains] what chose it: "requested", "name" or "fallback"
    domains.positive_reason        str: [domains] the same, as a sentence
    domains.auroc_nll              float: [domains] AUROC of the main mixture's NLL (no labels fit)
    domains.auroc_one_class        float: [domains] AUROC of the NLL under a negative-class mixture
    domains.one_class.fit_domain   str: [domains] the negative class, whose images fitted that mixture
    domains.one_class.n_fit        int: [domains] images it was fitted on (half of that class)
    domains.one_class.n_scored     int: [domains] held-out images it scored
    domains.one_class.n_parameters  int: [domains] its free parameters (unreliable above n_fit)
    domains.auroc_scores.high_frequency  float: [domains] AUROC of the high-frequency energy score
    domains.auroc_scores.reconstruction  float: [domains] AUROC of minus the reconstruction error [decoder]
    domains.cluster_counts         K x D int: [domains] images per (cluster, domain)
"""

from __future__ import annotations

import re

SCHEMA_VERSION = 2


def schema() -> list[tuple[str, str]]:
    """(key, meaning) of every documented metrics.json key, read from this module's docstring."""
    return re.findall(r"^    (\S+) {2,}(.+)$", __doc__ or "", flags=re.MULTILINE)
