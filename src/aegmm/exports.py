"""What `aegmm assign` writes besides its CSV, chunk by chunk: a gallery grouped by cluster, one
folder per cluster (links or copies, plus the outliers), and the latent vectors in CSV row order.

Every output is checked before any image is assigned (``AssignOutputs.check``): none may lie
inside the data or the run, and none replaces a file aegmm did not write.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from .data import ImageSet
from .folders import check_output, check_output_file, created_by_aegmm, input_paths, is_marked, prepare_output
from .pipeline import Assignments, ImageClusterer
from .storage import write_atomic, write_json

OUTLIER_QUANTILE = 0.01  # images less likely than 99% of the run's training images are outliers
OUTLIERS = "outliers"


class GalleryPicks:
    """The most and least typical images of each cluster, kept across chunks (bounded memory)."""

    def __init__(self, k: int, keep: int = 8, tail: int = 3) -> None:
        self.k, self.keep, self.tail = k, keep, tail
        self.values: list[np.ndarray] = [np.zeros(0)] * k
        self.images: list[np.ndarray | None] = [None] * k

    def add(self, images: np.ndarray, clusters: np.ndarray, typicality: np.ndarray) -> None:
        for c in np.unique(clusters):
            members = clusters == c
            values = np.concatenate([self.values[c], typicality[members]])
            stack = (
                images[members]
                if self.images[c] is None
                else np.concatenate([self.images[c], images[members]])
            )
            order = np.argsort(-values, kind="stable")
            kept = np.unique(np.concatenate([order[: self.keep], order[self.keep :][-self.tail :]]))
            self.values[c], self.images[c] = values[kept], stack[kept]

    def figure(self, sizes: np.ndarray, title: str):
        from .evaluation.plots import cluster_galleries

        present = [c for c in range(self.k) if self.images[c] is not None]
        images = np.concatenate([self.images[c] for c in present])
        clusters = np.concatenate([np.full(len(self.values[c]), c) for c in present])
        values = np.concatenate([self.values[c] for c in present])
        return cluster_galleries(images, clusters, values, self.k, sizes=list(sizes), title=title)


def outlier_threshold(run: Path) -> float | None:
    """The OUTLIER_QUANTILE of the training images' log-likelihoods (from the run's CSV), if any."""
    path = Path(run) / "assignments.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as handle:
        values = [float(row["log_likelihood"]) for row in csv.DictReader(handle) if row["log_likelihood"]]
    return float(np.quantile(values, OUTLIER_QUANTILE)) if values else None


class FolderExport:
    """One subfolder per cluster holding links to (or copies of) its images, and outliers/."""

    def __init__(self, folder: Path, source: str, *, link: bool, threshold: float | None) -> None:
        self.folder, self.source, self.link, self.threshold = Path(folder), str(source), link, threshold
        self.kind = (
            "files"
            if Path(self.source).is_dir()
            else "zip"
            if self.source.lower().endswith(".zip")
            else "array"
        )
        self.names: dict[Path, set[str]] = {}
        self.labels: dict[int, Counter] = {}
        self.outliers = 0
        self.archive = zipfile.ZipFile(self.source) if self.kind == "zip" else None

    def add(self, part: ImageSet, table: Assignments) -> None:
        for i, (path, cluster, loglik) in enumerate(zip(table.paths, table.cluster, table.log_likelihood)):
            self.labels.setdefault(int(cluster), Counter())[self._label(part, i, path)] += 1
            self._place(part, i, path, self.folder / f"cluster_{int(cluster):02d}")
            if self.threshold is not None and loglik < self.threshold:
                self._place(part, i, path, self.folder / OUTLIERS)
                self.outliers += 1

    def _label(self, part: ImageSet, i: int, path: str) -> str:
        if self.kind == "array":
            return part.label_names[part.labels[i]] if part.has_labels else ""
        return PurePosixPath(path).parent.name  # the folder the image sits in

    def _place(self, part: ImageSet, i: int, path: str, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        name = PurePosixPath(path).name if self.kind != "array" else f"{_safe(path)}.png"  # npz: its row
        taken = self.names.setdefault(folder, set())
        stem, suffix, n = Path(name).stem, Path(name).suffix, 1
        while name in taken:  # two images of one name in different input folders
            n += 1
            name = f"{stem}_{n}{suffix}"
        taken.add(name)
        target = folder / name
        if self.kind == "files" and self.link:
            os.symlink(Path(path).resolve(), target)
        elif self.kind == "files":
            shutil.copyfile(path, target)
        elif self.kind == "zip":
            write_atomic(target, self.archive.read(path))  # the member's bytes; nothing is extracted by name
        else:
            from PIL import Image

            image = part.images[i]
            buffer = io.BytesIO()
            Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, "PNG")
            write_atomic(target, buffer.getvalue())

    def finish(self) -> list[str]:
        """Names each cluster folder after its dominant label when there are two or more labels."""
        if self.archive is not None:
            self.archive.close()
        distinct = {label for counts in self.labels.values() for label in counts if label}
        if len(distinct) >= 2:
            for cluster, counts in self.labels.items():
                label = "".join(
                    ch if ch.isalnum() or ch in "-_" else "_" for ch in counts.most_common(1)[0][0]
                )
                old = self.folder / f"cluster_{cluster:02d}"
                os.replace(old, old.with_name(f"{old.name}_{label}"))
        if self.threshold is None:
            rule = "no outliers/: the run folder has no assignments.csv with its training log-likelihoods"
        else:
            rule = (
                f"outliers/: {self.outliers:,} images with a log-likelihood below {self.threshold:.4g}, "
                f"the {OUTLIER_QUANTILE:.0%} quantile of the run's training images (each is in its "
                "cluster's folder too)"
            )
        how = "symbolic links to" if self.kind == "files" and self.link else "copies of"
        (self.folder / "README.txt").write_text(
            f"One folder per cluster, holding {how} its images.\n{rule}\n"
        )
        return [f"images sorted into {self.folder}/ ({how} the files, one folder per cluster)", rule]


class LatentRows:
    """The latent vector of every CSV row (NaN rows for skipped files), written as one .npy."""

    def __init__(self, path: Path, latent_dim: int) -> None:
        self.path, self.latent_dim, self.parts = Path(path), latent_dim, []

    def add(self, part: ImageSet, table: Assignments) -> None:
        if len(table.paths):
            self.parts.append(np.asarray(table.latents, dtype=np.float32))
        self.parts.append(np.full((len(table.skipped), self.latent_dim), np.nan, np.float32))  # as the CSV

    def finish(self, csv_path: Path) -> list[str]:
        rows, latent_dim = np.concatenate(self.parts), self.latent_dim
        buffer = io.BytesIO()
        np.save(buffer, rows)
        write_atomic(self.path, buffer.getvalue())
        write_json(_sidecar(self.path), {"created_by": "aegmm", "rows": len(rows), "csv": str(csv_path)})
        shape = f"{len(rows):,} x {latent_dim}"
        return [f"latent vectors ({shape}, rows in the order of {csv_path}) written to {self.path}"]


def _safe(text: str) -> str:
    """A file-name-safe version of a label or an array row name."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(text))


def _sidecar(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def _latents_by_aegmm(path: Path) -> bool:
    return created_by_aegmm(_sidecar(path))


@dataclass(frozen=True)
class AssignExtras:
    """The optional outputs of an assignment besides its CSV."""

    gallery: str | Path | None = None  # image file: each cluster's most and least typical images
    export: str | Path | None = None  # folder: the images sorted into one subfolder per cluster
    copy: bool = False  # export copies instead of symbolic links (always for .zip/.npz inputs)
    link: bool = False  # export as symbolic links, and refuse inputs that cannot be linked
    latents: str | Path | None = None  # .npy file: the latent vectors, one row per CSV row


class AssignOutputs:
    """The optional outputs of one assignment, fed each chunk by ``runs.assign_to_csv``."""

    def __init__(self, run: Path, data, out: Path, extras: AssignExtras, inputs: list[Path]) -> None:
        self.run, self.data, self.out, self.extras, self.inputs = run, data, out, extras, inputs
        self.gallery: GalleryPicks | None = None
        self.export: FolderExport | None = None
        self.latents: LatentRows | None = None

    def start(self, clusterer: ImageClusterer) -> None:
        """Size the outputs for the loaded run (its K and latent size)."""
        if self.extras.gallery:
            self.gallery = GalleryPicks(clusterer.n_components_)
        if self.extras.latents:
            self.latents = LatentRows(Path(self.extras.latents), clusterer.config_.feature_dim)

    @classmethod
    def check(cls, run: Path, data, out: Path, extras: AssignExtras) -> AssignOutputs:
        """Refuse every output that cannot be written, before any work."""
        from .evaluation.figure_files import image_format, is_aegmm_image

        inputs = input_paths(run, data)
        if extras.gallery:
            image_format(extras.gallery, "--gallery")
            check_output_file(
                Path(extras.gallery), inputs=inputs, flag="--gallery", written_by_aegmm=is_aegmm_image
            )
        if extras.latents:
            if Path(extras.latents).suffix != ".npy":
                raise ValueError(f"--latents must end in .npy, got {Path(extras.latents).name!r}")
            for path in (Path(extras.latents), _sidecar(Path(extras.latents))):
                check_output_file(path, inputs=inputs, flag="--latents", written_by_aegmm=_latents_by_aegmm)
        if extras.export:
            folder = Path(extras.export)  # a folder an earlier --export wrote may be replaced
            hint = "choose another folder (an --export folder aegmm wrote is replaced)"
            check_output(folder, inputs=inputs, force=is_marked(folder), flag="--export", hint=hint)
            if extras.link and not Path(data).is_dir():
                raise ValueError(f"--link needs a folder of image files, but {data} is not one; use --copy")
        elif extras.link or extras.copy:
            raise ValueError("--link and --copy say how --export sorts the images; add --export DIR")
        return cls(run, data, out, extras, inputs)

    def add(self, part: ImageSet, table: Assignments) -> None:
        if self.gallery is not None and len(table.paths):
            self.gallery.add(part.images, table.cluster, table.typicality)
        if self.extras.export and len(table.paths):
            if self.export is None:
                folder = Path(self.extras.export)
                prepare_output(folder, inputs=self.inputs, force=is_marked(folder))
                threshold = outlier_threshold(self.run)
                self.export = FolderExport(folder, self.data, link=not self.extras.copy, threshold=threshold)
            self.export.add(part, table)
        if self.latents is not None:
            self.latents.add(part, table)

    def finish(self, counts: np.ndarray) -> list[str]:
        """Write what was collected; the lines to print."""
        lines = []
        if self.gallery is not None:
            from .evaluation.figure_files import figure_bytes, image_format

            title = f"{int(counts.sum()):,} images: each cluster's most typical, then its least typical"
            figure = self.gallery.figure(counts, title)
            gallery = Path(self.extras.gallery)
            write_atomic(gallery, figure_bytes(figure, image_format(gallery, "--gallery")))
            lines.append(f"gallery written to {gallery}")
        if self.export is not None:
            lines += self.export.finish()
        if self.latents is not None:
            lines += self.latents.finish(self.out)
        return lines
