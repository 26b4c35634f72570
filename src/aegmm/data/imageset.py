"""ImageSet: decoded images kept as uint8, with optional labels and the files that were skipped."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ImageSet:
    images: np.ndarray  # uint8, (N, H, W, C), C = 1 or 3
    paths: list[str]  # where each image came from (file path, zip member, or npz index)
    labels: np.ndarray | None = None  # int64 (N,) index into label_names, or None
    label_names: list[str] | None = None  # names of the labels
    domains: np.ndarray | None = None  # int64 (N,) index into domain_names (e.g. real / simulated)
    domain_names: list[str] | None = None  # names of the domains; without them labels act as domains
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) not decoded
    source: str = ""  # what was loaded, for messages

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 with shape (N, H, W, C), got {self.images.dtype} {self.images.shape}"
            )
        if len(self.paths) != len(self.images):
            raise ValueError(f"expected {len(self.images)} paths, got {len(self.paths)}")
        for name in ("labels", "domains"):
            values = getattr(self, name)
            if values is not None and len(values) != len(self.images):
                raise ValueError(f"expected {len(self.images)} {name}, got {len(values)}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def has_labels(self) -> bool:
        return self.labels is not None and self.label_names is not None

    @property
    def label_strings(self) -> list[str] | None:
        if not self.has_labels:
            return None
        return [self.label_names[i] for i in self.labels]

    def domain_view(self) -> tuple[np.ndarray, list[str]] | None:
        """(domain index per image, domain names): explicit domains, else labels, else None."""
        if self.domains is not None and self.domain_names is not None:
            return self.domains, self.domain_names
        if self.has_labels:
            return self.labels, self.label_names
        return None

    def subset(self, index: np.ndarray) -> ImageSet:
        """The images at `index` (positions or a boolean mask), with their paths and labels."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return ImageSet(
            images=self.images[index],
            paths=[self.paths[i] for i in index],
            labels=None if self.labels is None else self.labels[index],
            label_names=self.label_names,
            domains=None if self.domains is None else self.domains[index],
            domain_names=self.domain_names,
            skipped=list(self.skipped),
            source=self.source,
        )
