"""The report's style sheet and the caption of each figure (title, how to read it)."""

CSS = """
body{margin:0;background:#eef0f3;color:#1d232b;font:15px/1.5 system-ui,-apple-system,"Segoe UI",
Roboto,Helvetica,Arial,sans-serif}
main{box-sizing:border-box;max-width:1100px;margin:0 auto;padding:20px 32px 48px;background:#fff;
min-height:100vh}
h1{font-size:1.6em;margin:.3em 0}
h2{font-size:1.3em;margin-top:2em;border-bottom:2px solid #dfe3e8;padding-bottom:.2em}
h3{font-size:1.05em;margin-top:1.4em}
.meta{color:#555;font-size:.9em;overflow-wrap:anywhere}
nav{font-size:.9em;margin:.6em 0 1em}nav a{margin-right:1em;white-space:nowrap}
img{display:block;max-width:100%;height:auto;margin:0 auto}
figure{margin:1.2em 0}figcaption{font-size:.9em;color:#444;margin-top:.4em}
.scroll{max-width:100%;overflow-x:auto}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}
th,td{border:1px solid #d5dae0;padding:4px 9px;text-align:left;vertical-align:top;
overflow-wrap:anywhere}
th{background:#f1f3f6;overflow-wrap:normal}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.note{background:#fff7df;border-left:4px solid #e9b100;padding:6px 12px;margin:.6em 0}
pre{background:#f5f7f9;padding:10px 12px;overflow-x:auto;font-size:.85em}
code{font-size:.92em}
"""

CAPTIONS = {
    "loss": (
        "Training loss",
        "The objective's loss per epoch for training and validation images (reconstruction: mean "
        "squared error on normalised pixels; contrastive: NT-Xent); a validation curve above a "
        "still-falling training curve means over-fitting.",
    ),
    "reconstructions": (
        "Reconstructions",
        "Each original (top row) above its reconstruction by the autoencoder; what is lost here is "
        "invisible to the mixture.",
    ),
    "encoded": (
        "Encoded images",
        "Each original beside the two most active channels of the stem and of each ResNet stage, "
        "from fine detail (left) to coarse, abstract maps (right).",
    ),
    "information_criteria": (
        "BIC and AIC against K",
        "Mixtures refitted on these images with K components; the lowest point of each curve is "
        "the K that criterion prefers, the dashed line the model's K.",
    ),
    "contingency": (
        "Clusters against labels",
        "Each cell counts the images of one cluster (row) with one label (column); one dark cell "
        "per row means clusters that follow the labels.",
    ),
    "domain_loglik": (
        "Log-likelihood by domain",
        "Histograms of each domain's images' log-likelihoods under the main mixture and under "
        "mixtures fitted on one domain; separated histograms mean the domains are distinguishable.",
    ),
    "kl_log_ratios": (
        "Monte Carlo KL samples",
        "Per-sample log p(x) - log q(x) for points drawn from P; its mean (dashed) is the KL "
        "estimate, and a wide spread means a large standard error.",
    ),
    "domain_shares": (
        "Clusters by domain",
        "The share of each domain in each cluster; bars of a single colour are clusters that hold "
        "one domain only.",
    ),
    "roc": (
        "ROC curves",
        "True against false positive rate of each label-free score (the mixtures' negative "
        "log-likelihoods and the per-image statistics) as a detector of the positive class; the "
        "further above the diagonal, the better, below it means the score points the other way.",
    ),
    "pca": (
        "PCA of the features",
        "The features projected on their first two principal components, coloured by cluster "
        "(stars: mixture means) and by label; overlap here can still be separated in more dimensions.",
    ),
    "tsne": (
        "t-SNE of the features",
        "A t-SNE map of the features (stars: centroids of each cluster's points); it keeps "
        "neighbourhoods, not distances, so only read which points group together.",
    ),
    "galleries": (
        "Cluster galleries",
        "Per cluster (with its size), the 8 images with the highest log p(image, cluster) and, "
        "after a gap, the 3 with the lowest; the left part shows what the cluster stands for.",
    ),
}
