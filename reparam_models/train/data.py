"""Data: the built-in digits set, ``ImageFolder`` directories, transforms, samplers, pairs.

* Built-in: scikit-learn's handwritten digits (``sklearn.datasets.load_digits``: 1,797 8x8
  grey images, 10 classes; the file ships inside scikit-learn, nothing is downloaded). Fixed
  stratified split: 360 test images (``train_test_split(..., random_state=0)``). The images are
  served as RGB PIL images, resized by the transforms to the model's input size.
* Real data: an ``ImageFolder`` root with ``train/`` and ``val/`` sub-folders (the layout of
  ImageNet and of timm's training script), read by ``torchvision.datasets.ImageFolder``.

Transforms are timm's ``create_transform`` (random-resized crop, RandAugment, flips for
training; resize + centre crop for evaluation). The training loader draws from a
``DistributedSampler`` whose order depends only on ``(seed, epoch)``, so a resumed run sees
the same batches as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

__all__ = [
    "DIGITS_TEST_SIZE",
    "DataSplits",
    "DigitsDataset",
    "load_digits_splits",
    "load_image_folder",
    "build_transforms",
    "train_loader",
    "shard_loader",
    "verification_pairs",
]

DIGITS_TEST_SIZE = 360
DIGITS_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


@dataclass
class DataSplits:
    """Train and test datasets (transforms attached later) with their class count."""

    train: Dataset[Any]
    test: Dataset[Any]
    num_classes: int
    name: str
    mean_std: tuple[tuple[float, ...], tuple[float, ...]]


class DigitsDataset(Dataset[Any]):
    """scikit-learn's 8x8 digits as RGB PIL images (values 0..16 scaled to 0..255)."""

    def __init__(self, images: np.ndarray, targets: np.ndarray,
                 transform: Callable[[Any], Any] | None = None) -> None:
        self.images = images
        self.targets = [int(t) for t in targets]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        img = Image.fromarray(self.images[index]).convert("RGB")
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[index]


def load_digits_splits() -> DataSplits:
    """The built-in data: digits with the fixed 1,437 / 360 stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, digits.target, test_size=DIGITS_TEST_SIZE, random_state=0, stratify=digits.target
    )
    return DataSplits(DigitsDataset(x_tr, y_tr), DigitsDataset(x_te, y_te), 10, "digits",
                      DIGITS_MEAN_STD)


def image_folder_roots(root: str | Path) -> tuple[Path, Path]:
    """``(train, val)`` folders under ``root``; FileNotFoundError when absent."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data directory {str(root)!r} does not exist")
    train = root / "train"
    val = next((root / n for n in ("val", "validation", "test") if (root / n).is_dir()), None)
    if not train.is_dir() or val is None:
        raise FileNotFoundError(
            f"data directory {str(root)!r} must hold train/ and val/ sub-folders "
            "(torchvision ImageFolder layout: train/<class>/<image>)"
        )
    return train, val


def load_image_folder(root: str | Path) -> DataSplits:
    """An ``ImageFolder`` root with ``train/`` and ``val/`` (ImageNet mean and std)."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from torchvision.datasets import ImageFolder

    train_dir, val_dir = image_folder_roots(root)
    train, test = ImageFolder(str(train_dir)), ImageFolder(str(val_dir))
    return DataSplits(train, test, len(train.classes), str(root),
                      (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD))


def limit(dataset: Dataset[Any], n: int | None) -> Dataset[Any]:
    """The first ``n`` items of ``dataset`` (all of them for ``None``)."""
    if n is None or n >= len(dataset):  # type: ignore[arg-type]
        return dataset
    return Subset(dataset, range(n))


def set_transform(dataset: Dataset[Any], transform: Callable[[Any], Any]) -> None:
    """Attach ``transform`` to a dataset (through ``Subset`` wrappers)."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    dataset.transform = transform  # type: ignore[attr-defined]


def build_transforms(
    img_size: int,
    mean_std: tuple[Sequence[float], Sequence[float]],
    *,
    auto_augment: str | None,
    scale: tuple[float, float],
    hflip: float,
    crop_pct: float,
) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """timm's training transform (random-resized crop, RandAugment, flip) and eval transform."""
    from timm.data import create_transform

    mean, std = tuple(mean_std[0]), tuple(mean_std[1])
    train = create_transform(
        img_size, is_training=True, auto_augment=auto_augment, scale=scale, hflip=hflip,
        color_jitter=0.0, interpolation="bicubic", mean=mean, std=std,
    )
    test = create_transform(img_size, is_training=False, crop_pct=crop_pct,
                            interpolation="bicubic", mean=mean, std=std)
    return train, test


def train_loader(
    dataset: Dataset[Any], batch_per_rank: int, rank: int, world_size: int, seed: int,
    workers: int, pin_memory: bool,
) -> DataLoader[Any]:
    """Shuffled, rank-sharded batches (``DistributedSampler``; call ``set_epoch`` each epoch)."""
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True,
                                 seed=seed, drop_last=True)
    return DataLoader(dataset, batch_size=batch_per_rank, sampler=sampler, drop_last=True,
                      num_workers=workers, pin_memory=pin_memory,
                      generator=torch.Generator(), persistent_workers=False)


def shard_loader(
    dataset: Dataset[Any], batch: int, rank: int, world_size: int, workers: int
) -> tuple[list[int], DataLoader[Any]]:
    """This rank's share ``rank::world_size`` of ``dataset`` (every item exactly once overall)."""
    indices = list(range(rank, len(dataset), world_size))  # type: ignore[arg-type]
    return indices, DataLoader(Subset(dataset, indices), batch_size=batch, shuffle=False,
                               num_workers=workers)


def verification_pairs(targets: Sequence[int], seed: int = 0) -> np.ndarray:
    """Face-verification pairs over a labelled set: one pair per item, alternately a same-class
    and a different-class partner, drawn with a fixed seed. Returns (n, 3): ``a, b, same``."""
    rng = np.random.default_rng(seed)
    t = np.asarray(targets)
    by_class = {c: np.flatnonzero(t == c) for c in np.unique(t)}
    pairs = []
    for i, c in enumerate(t):
        want_same = i % 2 == 0
        pool = by_class[c] if want_same else np.flatnonzero(t != c)
        pool = pool[pool != i]
        if len(pool) == 0:
            continue
        j = int(rng.choice(pool))
        pairs.append((i, j, int(t[j] == c)))
    return np.asarray(pairs, dtype=np.int64)


def dataset_targets(dataset: Dataset[Any]) -> list[int]:
    """The labels of ``dataset`` (through ``Subset`` wrappers) without loading images."""
    if isinstance(dataset, Subset):
        inner = dataset_targets(dataset.dataset)
        return [inner[i] for i in dataset.indices]
    return [int(t) for t in dataset.targets]  # type: ignore[attr-defined]
