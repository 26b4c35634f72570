"""How to read the report's numbers: the sentences and warnings shown beside them.

Each rule is stated where it is applied, so that a reader of the report can check it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# what an AUROC below 0.5 says, per score: the positive images score lower than the negative ones
BELOW_HALF = {
    "nll": "{p} images look more likely than {n} images under this mixture",
    "high_frequency": "{p} images carry less high-frequency energy than {n} images",
    "reconstruction": "{p} images are reconstructed worse than {n} images",
}


def auroc_reading(d: Mapping, value: float | None, score: str) -> str:
    """How to read one AUROC: its positive class, and what a value below 0.5 means."""
    p, n = d["positive"], d["negative"]
    text = f"positive class {p} (vs {n}); 0.5 = chance"
    if value is not None and value < 0.5:
        text += f"; below 0.5 because {BELOW_HALF[score].format(p=p, n=n)}, against this score's orientation"
    return text


def too_few_images(what: str, n_images: int, n_parameters: int) -> str:
    """A warning box when a mixture has more free parameters than the images it was fitted on."""
    if n_images >= n_parameters:
        return ""
    return (
        f"Unreliable: {what} has {n_parameters:,} free parameters but rests on {n_images:,} images; "
        "with fewer images than parameters its numbers mostly reflect reg_covar and chance. "
        "Evaluate on more images, or use fewer clusters or a smaller --reduced-dim."
    )


UNDERTRAINED_FALL = 0.02  # validation loss still falling by more than 2% in the last epoch
UNDERTRAINED_PSNR = 15.0  # dB: reconstructions this blurry hold little of the images
FEW_IMAGES = 200  # below this many images, every figure of the report rests on too few


def training_warnings(m: Mapping, history: Sequence[Mapping]) -> list[str]:
    """Why the autoencoder looks undertrained, or the evaluation too small (empty: neither)."""
    notes = []
    losses = [h.get("val_loss") for h in history if h.get("val_loss") is not None]
    losses = [v for v in losses if v == v]  # NaN: no validation split
    if len(losses) >= 2 and losses[-1] < (1 - UNDERTRAINED_FALL) * losses[-2]:
        fall = 1 - losses[-1] / losses[-2]
        notes.append(
            f"The autoencoder looks undertrained: its validation loss still fell by {fall:.0%} in the last "
            f"epoch (the rule: more than {UNDERTRAINED_FALL:.0%}). More --epochs would likely help."
        )
    if m["psnr"] is not None and m["psnr"] < UNDERTRAINED_PSNR:
        notes.append(
            f"The reconstructions are blurry: PSNR {m['psnr']:.3g} dB, below {UNDERTRAINED_PSNR:.0f} dB. "
            "The encoder may keep little of the images; train longer or with a larger --latent-dim."
        )
    if m["n_images"] < FEW_IMAGES:
        notes.append(
            f"Only {m['n_images']:,} images were evaluated (fewer than {FEW_IMAGES}): every figure and "
            "number here rests on few images and will move with another sample."
        )
    return notes
