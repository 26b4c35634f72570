"""Figures of the evaluation report, and the gallery of `aegmm assign --gallery`.

Every plot function takes ``ax=None`` (a new Figure is made when none is given) and returns the
Figure; nothing is ever shown. Figures are built with matplotlib's object API
(``matplotlib.figure.Figure``) rather than pyplot, so they need no display, no global backend
switch, and are freed like any other object. ``to_png`` turns a Figure into PNG bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import auc, roc_curve

from aegmm.evaluation.metrics import contingency

DPI = 100
GALLERY_TOP, GALLERY_BOTTOM = 8, 3  # most and least typical images per cluster in cluster_galleries


def new_axes(ax: Axes | None = None, size: tuple[float, float] = (7.0, 4.2)) -> tuple[Figure, Axes]:
    """``ax`` and its Figure, or a new Figure of ``size`` inches with one Axes."""
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    return fig, fig.add_subplot()


def panels(n: int, size: tuple[float, float] = (5.0, 4.0), ncols: int | None = None):
    """A Figure with ``n`` Axes side by side (``ncols`` per row), each about ``size`` inches."""
    ncols = max(1, min(n, ncols or n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for extra in axes[n:]:
        extra.set_visible(False)
    return fig, list(axes[:n])


MARK = "written by aegmm"  # in every image file aegmm writes (see figure_files)


def to_png(fig: Figure) -> bytes:
    """The Figure as PNG bytes (cropped to what is drawn), marked as written by aegmm."""
    buffer = io.BytesIO()
    metadata = {"Software": MARK}
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", facecolor="white", metadata=metadata)
    return buffer.getvalue()


def _legend_outside(ax: Axes, *, below: bool = False) -> None:
    """The legend beside (or below) the axes, so that it never covers a curve or a bar."""
    if below:
        ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.15), fontsize=8, frameon=False)
    else:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def _palette(n: int):
    cmap = colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "viridis"]
    return [cmap(i if n <= 20 else i / max(n - 1, 1)) for i in range(n)]


# -- curves and bars ---------------------------------------------------------------------------


LOSS_NAMES = {  # the y axis of loss_history, by training objective
    "reconstruction": "MSE (normalised pixels)",
    "contrastive": "NT-Xent",
    "hybrid": "NT-Xent + MSE of the detached decoder",
}


def loss_history(
    history: Sequence[Mapping], ax: Axes | None = None, objective: str = "reconstruction"
) -> Figure:
    """Training and validation loss per epoch, from a run's ``history_``."""
    fig, ax = new_axes(ax)
    epochs = [h["epoch"] for h in history]
    for key, label in (("train_loss", "training"), ("val_loss", "validation")):
        values = np.array([h.get(key, np.nan) for h in history], dtype=float)
        if np.isfinite(values).any():
            ax.plot(epochs, values, marker="o", label=label)
    if not history:
        ax.text(0.5, 0.5, "the run has no training history", ha="center", transform=ax.transAxes)
    ax.set(xlabel="epoch", ylabel=LOSS_NAMES[objective], title=f"Training loss per epoch ({objective})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if history:
        _legend_outside(ax)
    return fig


def information_criteria(curve: Mapping, chosen_k: int, ax: Axes | None = None) -> Figure:
    """BIC and AIC against K (``curve``: lists ``k``, ``bic``, ``aic``), the model's K marked."""
    fig, ax = new_axes(ax)
    ax.plot(curve["k"], curve["bic"], marker="o", label="BIC")
    ax.plot(curve["k"], curve["aic"], marker="s", label="AIC")
    ax.axvline(chosen_k, color="grey", linestyle="--", label=f"the model's K = {chosen_k}")
    ax.set(xlabel="number of components K", ylabel="criterion (lower is better)")
    ax.set_title("BIC and AIC of mixtures refitted on these images")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    return fig


def histograms(
    groups: Mapping[str, np.ndarray],
    *,
    title: str,
    xlabel: str,
    mark_means: bool = False,
    ax: Axes | None = None,
) -> Figure:
    """Overlaid density histograms of each group's values on shared bins (0.5-99.5 percentiles)."""
    fig, ax = new_axes(ax)
    finite = [np.asarray(v, float)[np.isfinite(v)] for v in groups.values()]
    pooled = np.concatenate(finite) if finite else np.zeros(0)
    if pooled.size:
        lo, hi = np.percentile(pooled, [0.5, 99.5])
        bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 41)
        for color, (name, values) in zip(_palette(len(groups)), zip(groups, finite)):
            ax.hist(
                np.clip(values, bins[0], bins[-1]),
                bins=bins,
                density=True,
                alpha=0.45,
                color=color,
                label=f"{name} (n={len(values):,})",
            )
            if mark_means:
                ax.axvline(values.mean(), color=color, linestyle="--")
        _legend_outside(ax)
    ax.set(title=title, xlabel=xlabel, ylabel="density")
    ax.grid(alpha=0.3)
    return fig


def domain_shares(counts: np.ndarray, domain_names: Sequence[str], ax: Axes | None = None) -> Figure:
    """Stacked bars: the share of each domain in each cluster (``counts``: clusters x domains)."""
    fig, ax = new_axes(ax, size=(8.0, 4.2))
    counts = np.asarray(counts, dtype=float)
    sizes = counts.sum(axis=1)
    shares = counts / np.where(sizes > 0, sizes, 1.0)[:, None]
    x, bottom = np.arange(len(counts)), np.zeros(len(counts))
    for j, (name, color) in enumerate(zip(domain_names, _palette(len(domain_names)))):
        ax.bar(x, shares[:, j], bottom=bottom, color=color, label=name)
        bottom += shares[:, j]
    for i, size in enumerate(sizes):
        ax.text(i, 1.01, f"{int(size):,}", ha="center", va="bottom", fontsize=7)
    ax.set(xticks=x, xlabel="cluster (number of images above the bar)", ylabel="share of the cluster")
    ax.set_ylim(0, 1.1)
    ax.set_title("How each cluster splits by domain")
    _legend_outside(ax)
    return fig


def roc_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], ax: Axes | None = None) -> Figure:
    """ROC curves; ``curves`` maps a name to (scores, is_positive)."""
    fig, ax = new_axes(ax, size=(5.5, 4.5))
    for name, (scores, positive) in curves.items():
        fpr, tpr, _ = roc_curve(np.asarray(positive, bool), scores)
        ax.plot(fpr, tpr, label=f"{name}: AUROC {auc(fpr, tpr):.3f}")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="Telling domains apart")
    ax.grid(alpha=0.3)
    _legend_outside(ax, below=True)  # long names: below the curves, never over them
    return fig


def contingency_heatmap(
    table: np.ndarray,
    row_names: Sequence[str],
    col_names: Sequence[str],
    *,
    title: str,
    ax: Axes | None = None,
) -> Figure:
    """Counts of images per (cluster, label) as a heatmap, annotated when small enough."""
    fig, ax = new_axes(ax, size=(6.0, 5.0))
    table = np.asarray(table)
    image = ax.imshow(table, cmap="Blues", aspect="auto")
    if table.size <= 400:
        limit = table.max() / 2 if table.size else 0
        for (i, j), value in np.ndenumerate(table):
            ax.text(
                j,
                i,
                str(value),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if value > limit else "black",
            )
    ax.set_xticks(
        range(len(col_names)),
        [str(c) for c in col_names],
        rotation=90 if len(col_names) > 8 else 0,
        fontsize=8,
    )
    ax.set_yticks(range(len(row_names)), [str(r) for r in row_names], fontsize=8)
    ax.set(xlabel="label", ylabel="cluster", title=title)
    fig.colorbar(image, ax=ax, shrink=0.8, label="images")
    return fig


def scatter_2d(
    points: np.ndarray,
    groups: np.ndarray,
    group_names: Sequence[str],
    *,
    title: str,
    centers: np.ndarray | None = None,
    ax: Axes | None = None,
) -> Figure:
    """2-D points coloured by group; ``centers`` (one per group) drawn as numbered stars."""
    fig, ax = new_axes(ax, size=(6.0, 5.0))
    colors = _palette(len(group_names))
    for g, (name, color) in enumerate(zip(group_names, colors)):
        mask = groups == g
        if mask.any():
            ax.scatter(points[mask, 0], points[mask, 1], s=6, alpha=0.6, color=color, label=str(name))
    if centers is not None:
        for g, (cx, cy) in enumerate(centers):
            if np.isfinite([cx, cy]).all():
                ax.scatter(cx, cy, marker="*", s=260, color=colors[g], edgecolors="black", zorder=3)
                ax.annotate(str(g), (cx, cy), xytext=(5, 5), textcoords="offset points", fontsize=8)
    if len(group_names) <= 20:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, markerscale=2)
    ax.set(title=title, xticks=[], yticks=[])
    return fig


def contingency_panels(
    labels: np.ndarray, predictions: Mapping[str, np.ndarray], label_names: Sequence[str]
) -> Figure:
    """One contingency heatmap per clustering in ``predictions`` (title -> cluster per image)."""
    fig, axes = panels(len(predictions), size=(5.0, 4.5))
    for ax, (title, predicted) in zip(axes, predictions.items()):
        table, rows, cols = contingency(labels, predicted)
        contingency_heatmap(table, rows, [label_names[c] for c in cols], title=title, ax=ax)
    return fig


def feature_views(
    points: np.ndarray,
    clusters: np.ndarray,
    k: int,
    centers: np.ndarray,
    labels: tuple[np.ndarray, Sequence[str]] | None = None,
    *,
    method: str,
) -> Figure:
    """2-D points coloured by cluster (``centers`` as stars) and, when given, by label."""
    fig, axes = panels(1 if labels is None else 2, size=(6.0, 5.0))
    names = [f"cluster {c}" for c in range(k)]
    scatter_2d(points, clusters, names, centers=centers, title=f"{method}, by cluster", ax=axes[0])
    if labels is not None:
        scatter_2d(points, labels[0], labels[1], title=f"{method}, by label", ax=axes[1])
    return fig


# -- pictures ----------------------------------------------------------------------------------


def _as_rgb(tile: np.ndarray) -> np.ndarray:
    tile = np.asarray(tile)
    tile = tile / 255.0 if tile.dtype == np.uint8 else tile.astype(float)
    if tile.ndim == 2:
        tile = tile[..., None]
    return np.repeat(tile, 3, axis=-1) if tile.shape[-1] == 1 else tile[..., :3]


def colorize(values: np.ndarray, size: int, cmap: str = "viridis") -> np.ndarray:
    """A 2-D map scaled to [0, 1], coloured, and resized (nearest) to ``size`` x ``size`` RGB."""
    values = np.asarray(values, dtype=float)
    lo, hi = values.min(), values.max()
    scaled = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    rows = np.arange(size) * values.shape[0] // size
    cols = np.arange(size) * values.shape[1] // size
    return colormaps[cmap](scaled[np.ix_(rows, cols)])[..., :3]


def image_mosaic(
    rows: Sequence[Sequence[np.ndarray | None]],
    *,
    captions: Sequence[Sequence[str]] | None = None,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    title: str | None = None,
    tile_inches: float = 0.9,
    ax: Axes | None = None,
) -> Figure:
    """Rows of same-sized images (uint8 or [0, 1] floats, gray or RGB; None leaves a cell empty)
    drawn as one picture, with optional captions under each image and labels beside rows and
    above columns."""
    first = next(t for row in rows for t in row if t is not None)
    h, w = first.shape[:2]
    ncols = max(len(row) for row in rows)
    gap, band = max(1, h // 10), (math.ceil(0.3 * h) if captions else 0)
    cell_h, cell_w = h + band + gap, w + gap
    canvas = np.ones((len(rows) * cell_h + gap, ncols * cell_w + gap, 3))
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            if tile is not None:
                y, x = gap + r * cell_h, gap + c * cell_w
                canvas[y : y + h, x : x + w] = _as_rgb(tile)
    tile_inches = min(tile_inches, 11.0 / ncols)
    size = (ncols * tile_inches + 1.5, len(rows) * tile_inches * cell_h / cell_w + 0.6)
    fig, ax = new_axes(ax, size=size)
    ax.imshow(np.clip(canvas, 0.0, 1.0), interpolation="nearest")
    ax.set_axis_off()
    for r, label in enumerate(row_labels or []):
        ax.text(-gap, gap + r * cell_h + h / 2, label, ha="right", va="center", fontsize=10)
    for c, label in enumerate(col_labels or []):
        ax.text(gap + c * cell_w + w / 2, -gap, label, ha="center", va="bottom", fontsize=9)
    for r, row in enumerate(captions or []):
        for c, text in enumerate(row):
            x, y = gap + c * cell_w + w / 2, gap + r * cell_h + h + band / 2
            ax.text(x, y, text, ha="center", va="center", fontsize=8)
    if title:
        lines = max((str(label).count("\n") + 1 for label in col_labels or []), default=0)
        ax.set_title(title, pad=6 + 14 * lines)  # above the (possibly two-line) column labels
    return fig


def feature_maps_grid(
    originals: np.ndarray,
    maps: Sequence[np.ndarray],
    map_names: Sequence[str],
    *,
    channels: int = 2,
    ax: Axes | None = None,
) -> Figure:
    """Each original beside a few channels of each feature map (``maps[m]``: (N, C, h, w)).

    The channels shown per map are its most active ones (largest mean over the images shown).
    """
    size = originals.shape[1]
    kept = [i for i, m in enumerate(maps) if min(m.shape[2:]) > 1]  # a 1x1 map is one flat tile
    maps, map_names = [maps[i] for i in kept], [map_names[i] for i in kept]
    picks = [np.argsort(-m.mean(axis=(0, 2, 3)))[:channels] for m in maps]
    rows, col_labels = [], ["original"]
    for name, pick in zip(map_names, picks):
        col_labels += [f"{name}\n#{int(c)}" for c in pick]
    for i, image in enumerate(originals):
        tiles = [image]
        for m, pick in zip(maps, picks):
            tiles += [colorize(m[i, c], size) for c in pick]
        rows.append(tiles)
    title = "Encoded images: the encoder's feature maps (yellow = strong activation)"
    return image_mosaic(rows, col_labels=col_labels, title=title, ax=ax, tile_inches=0.8)


def cluster_galleries(
    images: np.ndarray,
    clusters: np.ndarray,
    typicality: np.ndarray,
    k: int,
    ax: Axes | None = None,
    *,
    sizes: Sequence[int] | None = None,
    title: str | None = None,
) -> Figure:
    """Per cluster, its most typical images, a gap, and its least typical ones.

    ``typicality`` ranks the images of a cluster (higher = more typical); rows are labelled
    with the cluster and its size (``sizes``, else the images given per cluster).
    """
    rows, labels = [], []
    for c in range(k):
        members = np.flatnonzero(clusters == c)
        order = members[np.argsort(-typicality[members], kind="stable")]
        top, bottom = order[:GALLERY_TOP], order[GALLERY_TOP:][-GALLERY_BOTTOM:]
        row = [images[i] for i in top] + [None] * (GALLERY_TOP - len(top) + 1)
        rows.append(row + [images[i] for i in bottom])
        labels.append(f"cluster {c} ({len(members) if sizes is None else sizes[c]:,})")
    col_labels = ["most typical"] + [""] * GALLERY_TOP + ["least typical"]
    return image_mosaic(rows, row_labels=labels, col_labels=col_labels, ax=ax, title=title)
