"""The evaluation report: one self-contained HTML page (inline CSS, figures as base64 PNG data
URIs, no script, no network), laid out from the metrics and figures ``evaluate`` computed.

Every string that comes from the user (paths, label and domain names, notes) is escaped.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Mapping, Sequence
from html import escape

from aegmm.evaluation.domains import MAX_DOMAINS
from aegmm.evaluation.image_scores import SCORE_NAMES
from aegmm.evaluation.metrics import KMEANS_FORMULAS
from aegmm.evaluation.readings import auroc_reading, too_few_images, training_warnings
from aegmm.evaluation.report_text import CAPTIONS, CSS


def _get(metrics: Mapping, key: str):
    value = metrics
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool | str):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, Sequence):
        return ", ".join(_fmt(v) for v in value)
    if abs(value) >= 1000:  # BIC, AIC, total log-likelihoods: whole numbers read best
        return f"{value:,.0f}"
    return f"{value:.3g}"  # three significant figures; metrics.json keeps full precision


NO_DECODER = (
    "none: this encoder learned by contrast (objective contrastive) and has no trained decoder; "
    "fit with --objective hybrid to get reconstructions as well"
)
NUM = ' class="num"'


def _table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """An escaped table in a horizontally scrollable box; all-number columns align right."""

    def is_number(value) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    numeric = [all(is_number(row[j]) for row in rows if j < len(row)) for j in range(len(headers))]
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = [f"<td{NUM if numeric[j] else ''}>{escape(_fmt(c))}</td>" for j, c in enumerate(row)]
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f'<div class="scroll"><table><tr>{head}</tr>{"".join(body)}</table></div>'


def _figure(figures: Mapping[str, bytes], name: str) -> str:
    if name not in figures:
        return ""
    title, sentence = CAPTIONS[name]
    data = base64.b64encode(figures[name]).decode("ascii")
    return (
        f'<figure id="fig-{name}"><img src="data:image/png;base64,{data}" alt="{escape(title)}">'
        f"<figcaption><b>{escape(title)}.</b> {escape(sentence)}</figcaption></figure>"
    )


def _p(text: str) -> str:
    return f"<p>{escape(text)}</p>"


def _warning(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>' if text else ""


def _unreliable(what: str, n_images: int, n_parameters: int) -> str:
    return _warning(too_few_images(what, n_images, n_parameters))


# -- sections ------------------------------------------------------------------------------------


def _values(m: Mapping, *keys: str, unit: str = "") -> str:
    return " / ".join(_fmt(_get(m, key)) for key in keys) + unit


def _summary(m: Mapping) -> str:
    rows = [
        ["Images evaluated", _values(m, "n_images"), f"from {m['data']}"],
        ["Clusters K", _values(m, "k"),
         f"{m['covariance_type']} covariances on {m['n_features']}-D features"],
        ["Reconstruction MSE / PSNR", _values(m, "reconstruction_mse", "psnr", unit=" dB"),
         "pixels in [0, 1]; lower MSE and higher PSNR are better"
         if m["psnr"] is not None else NO_DECODER],
        ["Held-out log-likelihood per image: GMM / K-Means",
         _values(m, "gmm.cv_loglik_mean", "kmeans.cv_loglik_mean"),
         "5-fold cross-validation, same K and features; higher is better"],
        ["BIC: GMM (saved) / K-Means", _values(m, "gmm.bic", "kmeans.bic"), "lower is better"],
    ]  # fmt: skip
    if "labels" in m:
        n_labels, k = len(m["labels"]["names"]), m["k"]
        matched = f"{n_labels} labels vs {k} clusters: Hungarian matching pairs at most {min(n_labels, k)}"
        if n_labels != k:
            matched += ", so the other clusters' images count as wrong; NMI and ARI do not pair"
        rows.append(["Labels: accuracy / NMI / ARI / purity",
                     _values(m, "labels.acc", "labels.nmi", "labels.ari", "labels.purity"),
                     f"1 = clusters equal the labels; {matched}"])  # fmt: skip
        rows.append(["Accuracy of K-Means: features / pixels",
                     _values(m, "kmeans_latent.acc", "kmeans_pixels.acc"),
                     "baselines for the accuracy above"])  # fmt: skip
    if "domains" in m:
        rows += _summary_domains(m["domains"])
    return '<h2 id="summary">Summary</h2>' + _table(["Measure", "Value", "How to read it"], rows)


def _summary_domains(d: Mapping) -> list[list[str]]:
    one_class = d["one_class"]["fit_domain"]
    rows = [
        ["AUROC, NLL under the main mixture", _fmt(d["auroc_nll"]),
         f"no labels used to fit; {auroc_reading(d, d['auroc_nll'], 'nll')}"],
        [f"AUROC, NLL under a mixture of {one_class} images", _fmt(d["auroc_one_class"]),
         f"fitted on half of the {one_class} images; {auroc_reading(d, d['auroc_one_class'], 'nll')}"],
    ]  # fmt: skip
    rows += [[f"AUROC, {SCORE_NAMES.get(name, name)}", _fmt(value),
              f"a per-image statistic, nothing fitted; {auroc_reading(d, value, name)}"]
             for name, value in d.get("auroc_scores", {}).items()]  # fmt: skip
    if len(d["names"]) == 2:
        (a, b), kl, se = d["names"], d["kl"], d["kl_stderr"]
        text = f"KL({a} || {b}) = {_fmt(kl[0][1])} ± {_fmt(se[0][1])}; "
        text += f"KL({b} || {a}) = {_fmt(kl[1][0])} ± {_fmt(se[1][0])}"
        rows.append(["KL between the domain mixtures", text, "nats; 0 = identical mixtures"])
    return rows


def _autoencoder(m: Mapping, figures: Mapping) -> str:
    rows = [["Training objective", m.get("objective", "reconstruction")]]
    if m.get("members", 1) > 1:
        side = "side by side; reconstructions: their mean; encoded images: the first one's"
        rows.append(["Autoencoders (--members)", f"{m['members']} ({side})"])
    rows += [["Reconstruction MSE (pixels in [0, 1])", m["reconstruction_mse"]], ["PSNR (dB)", m["psnr"]]]
    return (
        '<h2 id="autoencoder">Autoencoder</h2>'
        + _table(["Measure", "Value"], rows)
        + ("" if m["psnr"] is not None else f"<p>Reconstructions: {escape(NO_DECODER)}.</p>")
        + "".join(_figure(figures, name) for name in ("loss", "reconstructions", "encoded"))
    )


def _mixture(m: Mapping, figures: Mapping) -> str:
    g = m["gmm"]
    rows = [
        ["Log-likelihood (total / per image)", _values(g, "log_likelihood", "mean_log_likelihood")],
        ["BIC / AIC", _values(g, "bic", "aic")],
        ["Free parameters", g["n_parameters"]],
        ["5-fold held-out log-likelihood per image, by fold", g["cv_loglik"]],
        ["  mean over the folds", g["cv_loglik_mean"]],
        ["BIC over 10 seeds (refitted, n_init=1): mean ± std",
         _values(g, "bic_seeds.mean", "bic_seeds.std").replace(" / ", " ± ")],
    ]  # fmt: skip
    text = (
        "The saved mixture scores the features of these images as it is (it was fitted on the "
        "training images). Cross-validation and the seeds refit a mixture with the same K, "
        "covariance type and reg_covar on these features."
    )
    html = '<h2 id="mixture">Mixture fit</h2>' + _p(text) + _table(["Measure", "Value"], rows)
    n_cv = m["n_images"] - -(-m["n_images"] // 5)  # images each cross-validation refit is fitted on
    refits = "each mixture refitted on these images (CV folds, seeds, K curve)"
    html += _unreliable(refits, n_cv, g["n_parameters"])
    if "training_bic_curve" in g:
        curve = g["training_bic_curve"]
        html += _p("K was chosen by the lowest BIC on the training images:")
        html += _table(["K", *map(str, curve["k"])], [["BIC", *curve["bic"]]])
    if "training_candidates" in g:
        tried = g["training_candidates"]
        kept = (
            "the one whose clusters of the training images are the most equal in size (evenness 1: equal)"
            if tried.get("rule") == "balance"
            else "the one whose clusters of the training images agree most with the others' (mean "
            "adjusted Rand index)"
        )
        if "scaling" in tried:
            html += _p(
                "The mixture was fitted once per seed below (reducer and EM), under two scalings (l2: each "
                f"vector scaled to unit length; none: lengths kept). Under each, {kept} among that scaling's "
                "candidates was picked; of the two picks, the one with the more equal cluster sizes was "
                f"kept: seed {tried['kept']}."
            )
        else:
            html += _p(f"The mixture was fitted once per seed below (reducer and EM); {kept} was kept:")
        rows = [["scaling", *tried["scaling"]]] if "scaling" in tried else []
        rows.append(["agreement", *tried["agreement"]])
        if "evenness" in tried:
            rows.append(["evenness of the cluster sizes", *tried["evenness"]])
        html += _table(["seed", *map(str, tried["seed"])], rows)
    return html + _figure(figures, "information_criteria")


def _kmeans(m: Mapping) -> str:
    g, k = m["gmm"], m.get("kmeans")
    rows = [
        ["GMM, saved (fitted on the training images)", g["log_likelihood"], g["mean_log_likelihood"],
         g["aic"], g["bic"], g["n_parameters"], g["cv_loglik_mean"]],
        ["GMM, refitted on these images", g["refit"]["log_likelihood"],
         g["refit"]["log_likelihood"] / m["n_images"], g["refit"]["aic"], g["refit"]["bic"],
         g["n_parameters"], g["cv_loglik_mean"]],
    ]  # fmt: skip
    if k:
        keys = ("log_likelihood", "mean_log_likelihood", "aic", "bic", "n_parameters", "cv_loglik_mean")
        rows.append(["K-Means as a likelihood model (fitted on these images)", *(k[key] for key in keys)])
    folds = [["GMM", *g["cv_loglik"]]] + ([["K-Means", *k["cv_loglik"]]] if k else [])
    headers = ["Model", "Log-likelihood", "per image", "AIC", "BIC", "Parameters", "Held-out per image"]
    text = (
        f"K-Means with the same K ({m['k']}) on the same features, read as a mixture of spherical "
        "Gaussians at its centroids with one shared variance (a density, like the GMM's, see the "
        "formulas). The fair comparison is the held-out "
        "column: every model is refitted on 4/5 of the images and scored on the rest (the same "
        "folds for both). The two refitted rows are fitted on these very images."
    )
    return (
        '<h2 id="kmeans">K-Means compared</h2>'
        + _p(text)
        + _table(headers, rows)
        + _table(["Held-out log-likelihood per image, fold", *map(str, range(1, 6))], folds)
        + f"<h3>Formulas</h3><pre>{escape(KMEANS_FORMULAS)}</pre>"
    )


def _labels(m: Mapping, figures: Mapping) -> str:
    html = '<h2 id="labels">Agreement with labels</h2>'
    if "labels" not in m:
        return html + '<p class="note">The images have no labels, so this section is left out.</p>'
    keys = ("acc", "nmi", "ari", "purity")
    rows = [
        ["Gaussian mixture", *(m["labels"][key] for key in keys)],
        ["K-Means on the features", *(m["kmeans_latent"][key] for key in keys)],
        ["K-Means on raw pixels", *(m["kmeans_pixels"][key] for key in keys)],
    ]
    text = f"Labels: {', '.join(m['labels']['names'])}. All three use the same K ({m['k']}); "
    text += "labels are used only to score, never to fit."
    if m["k"] > len(m["labels"]["names"]):
        text += (
            f" With more clusters than labels, the Hungarian accuracy matches {len(m['labels']['names'])} "
            "clusters to the labels and counts every image of the other clusters as wrong; purity "
            "(each cluster votes for its majority label) is the fairer number then."
        )
    return (
        html
        + _p(text)
        + _table(["Clustering", "Accuracy", "NMI", "ARI", "Purity"], rows)
        + _figure(figures, "contingency")
    )


def _domains(m: Mapping, figures: Mapping) -> str:
    html = '<h2 id="domains">Domains</h2>'
    if "domains" not in m:
        return html + (
            f'<p class="note">No analysis: the images need 2 to {MAX_DOMAINS} domains (or labels) '
            "with enough images each.</p>"
        )
    d = m["domains"]
    names, negative = d["names"], d["one_class"]["fit_domain"]
    origin = "explicit domains of the images" if d["source"] == "domains" else "the labels, used as domains"
    html += _p(f"Domains: {', '.join(names)} ({origin}); images: {_fmt(d['counts'])}.")
    html += _orientation(d)
    use = [
        ["Per-domain mixtures: BIC, AIC, KL", "yes: each is fitted on one domain's images", "-"],
        ["AUROC, NLL under the main mixture", "no: the model never saw a domain label", "yes"],
        [f"AUROC, NLL under a mixture of {negative} images",
         f"partly: fitted on half of the {negative} images, known to be {negative}", "yes"],
        ["Cluster shares by domain", "no: the main model's clusters", "yes"],
    ]  # fmt: skip
    html += "<h3>Which numbers used labels</h3>" + _table(
        ["Numbers", "Labels used to fit?", "To score?"], use
    )
    rows = [[n, c, b, a] for n, c, b, a in zip(names, d["counts"], d["bic"], d["aic"])]
    html += "<h3>A mixture per domain</h3>" + _table(["Domain", "Images", "BIC", "AIC"], rows)
    crowded = [(name, n) for name, n in zip(names, d["counts"]) if n < d["n_parameters"]]
    if crowded:
        what = f"the mixture of {', '.join(name for name, _ in crowded)} (each, and every KL below)"
        html += _unreliable(what, min(n for _, n in crowded), d["n_parameters"])
    kl = [
        [p, *("-" if i == j else f"{_fmt(v)} ± {_fmt(s)}" for j, (v, s) in enumerate(zip(row, se)))]
        for i, (p, row, se) in enumerate(zip(names, d["kl"], d["kl_stderr"]))
    ]
    html += "<h3>KL divergence between the domain mixtures</h3>" + _p(
        f"KL(P || Q) in nats, row P, column Q, ± standard error; Monte Carlo with {d['kl_n_samples']:,} "
        "samples drawn from P. KL is not symmetric: read both directions."
    )
    html += _table(["P \\ Q", *names], kl)
    html += _figure(figures, "kl_log_ratios") + _figure(figures, "domain_loglik")
    return html + _detection(d, figures)


def _orientation(d: Mapping) -> str:
    """Which domain is the positive class and why; a warning box when nothing decided it."""
    text = f"Positive class of every AUROC: {d['positive']}, against {d['negative']}"
    text += f", because {d['positive_reason']}."
    if d["positive_rule"] == "fallback":
        return f'<p class="note">{escape(text)}</p>'
    return _p(text)


def _detection(d: Mapping, figures: Mapping) -> str:
    oc, negative, positive = d["one_class"], d["negative"], d["positive"]
    html = "<h3>Telling the domains apart without labels</h3>" + _table(
        ["Detector", "AUROC", "Positive class", "Fitted on", "Scored on"],
        [["NLL under the main mixture", d["auroc_nll"], positive, "the training images, no labels",
          f"{sum(d['counts']):,} images"],
         [f"NLL under a mixture of {negative}", d["auroc_one_class"], positive,
          f"{oc['n_fit']:,} {negative} images", f"{oc['n_scored']:,} held-out images"]]
        + [[SCORE_NAMES.get(name, name), value, positive, "nothing (a per-image statistic)",
            f"{sum(d['counts']):,} images"] for name, value in d.get("auroc_scores", {}).items()],
    )  # fmt: skip
    direction = (
        "Mixture scores: the negative log-likelihood (higher = more unusual). "
        f"Positive class: {positive}, against {negative}"
        + f". AUROC above 0.5: {positive} images look less likely than {negative} images; below 0.5: "
        "more likely. The per-image statistics are oriented beforehand, from the literature: more "
        "high-frequency energy and a lower reconstruction error count as more likely generated. "
        "All AUROCs are reported as computed, not flipped."
    )
    html += _unreliable(f"the mixture of {negative} images", oc["n_fit"], oc["n_parameters"])
    return html + _p(direction) + _figure(figures, "roc") + _figure(figures, "domain_shares")


def _schema(schema: Sequence[tuple[str, str]], version) -> str:
    text = (
        f"metrics.json, schema_version {version}. Nested keys are nested objects; [labels] keys exist "
        "only with labels, [domains] keys only with two or more domains, [auto K] only when K was "
        "chosen by BIC."
    )
    table = _table(["Key", "Meaning"], [list(row) for row in schema])
    details = f"<details><summary>every key of metrics.json</summary>{table}</details>"
    return f'<h2 id="schema">Schema</h2>{_p(text)}{details}'


def render_report(
    *,
    metrics: Mapping,
    figures: Mapping[str, bytes],
    notes: Sequence[str],
    run: str,
    schema: Sequence[tuple[str, str]],
    history: Sequence[Mapping] = (),
) -> str:
    """The whole HTML page as a string; ``history`` (the run's training) feeds the warnings."""
    m = metrics
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    meta = f"Run {run} · data {m['data']} · {m['n_images']:,} images · {m.get('seconds', 0):.0f} s · {when}"
    toc = [("summary", "Summary"), ("autoencoder", "Autoencoder"), ("mixture", "Mixture fit"),
           ("kmeans", "K-Means"), ("labels", "Labels"), ("domains", "Domains"),
           ("pictures", "Feature space"), ("galleries", "Galleries"), ("schema", "Schema")]  # fmt: skip
    nav = "".join(f'<a href="#{anchor}">{escape(title)}</a>' for anchor, title in toc)
    notes_html = "".join(_warning(n) for n in [*training_warnings(m, history), *notes])
    body = [
        f'<h1>aegmm evaluation report</h1><p class="meta">{escape(meta)}</p><nav>{nav}</nav>',
        _summary(m),
        notes_html,
        _autoencoder(m, figures),
        _mixture(m, figures),
        _kmeans(m),
        _labels(m, figures),
        _domains(m, figures),
        '<h2 id="pictures">Feature space</h2>' + _figure(figures, "pca") + _figure(figures, "tsne"),
        '<h2 id="galleries">Cluster galleries</h2>' + _figure(figures, "galleries"),
        _schema(schema, m["schema_version"]),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>aegmm evaluation: {escape(str(m['data']))}</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )
