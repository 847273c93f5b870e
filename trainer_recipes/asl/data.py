"""Sign Language MNIST: 28x28 grey hand signs of 24 letters, from the Kaggle CSV files.

Format (both files): a header ``label,pixel1,...,pixel784``, then one image per row: its label
(0-24, the letter's place in the alphabet; 9 = J and 25 = Z need motion and never occur) and
784 pixel values 0-255, row by row. Labels are mapped to 24 contiguous classes A..Y without J.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from trainer.data import InMemoryData, TensorSplit
from trainer.data.augment import RandomAffine
from trainer.errors import UserError

log = logging.getLogger(__name__)

LETTERS = [chr(ord("A") + i) for i in range(25) if i != 9]  # 24 letters, no J (and no Z)
HEADER = ["label", *(f"pixel{i}" for i in range(1, 785))]
FILES = {"train": "sign_mnist_train.csv", "test": "sign_mnist_test.csv"}


def label_to_class(labels: np.ndarray) -> np.ndarray:
    """Kaggle labels 0-24 (no 9) to classes 0-23."""
    return np.where(labels > 9, labels - 1, labels)


def find_csv(root: Path, split: str) -> Path | None:
    """``sign_mnist_<split>.csv``, else a single ``sign_mnist_<split>*.csv`` (e.g. a sample)."""
    exact = root / FILES[split]
    if exact.is_file():
        return exact
    matches = sorted(root.glob(f"sign_mnist_{split}*.csv"))
    return matches[0] if len(matches) == 1 else None


def read_csv(path: Path) -> TensorSplit:
    """One Sign Language MNIST CSV as uint8 images (N x 28 x 28) and class indices."""
    try:
        with path.open(encoding="utf-8") as f:
            header = f.readline().strip().split(",")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: byte {exc.start} of the header is not UTF-8 text; a Sign "
                        "Language MNIST CSV is plain ASCII (label,pixel1,...)") from None
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror}); check the file and its "
                        "permissions") from None
    if header != HEADER:
        shown = ",".join(header[:3]) + (",..." if len(header) > 3 else "")
        raise UserError(
            f"{path}: header is '{shown}' ({len(header)} columns); a Sign Language MNIST CSV "
            "starts with 'label,pixel1,...,pixel784' (785 columns)"
        )
    try:
        with warnings.catch_warnings():  # "input contained no data": said below, in one line
            warnings.simplefilter("ignore", UserWarning)
            table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
    except ValueError as exc:
        raise UserError(
            f"{path}: a row does not have 785 integer values "
            f"({str(exc).splitlines()[0][:120]}); each row is a label and 784 pixels"
        ) from None
    if len(table) == 0:
        raise UserError(f"{path} has a header but no rows")
    if table.shape[1] != len(HEADER):
        raise UserError(f"{path}: rows have {table.shape[1]} values, the header names "
                        f"{len(HEADER)}; each row is a label and 784 pixels")
    labels, pixels = table[:, 0], table[:, 1:]
    bad = (labels < 0) | (labels > 24) | (labels == 9)
    if bad.any():
        row = int(np.argmax(bad))
        raise UserError(
            f"{path}: label {labels[row]} on data row {row + 1} is out of range; labels are "
            "0-24 without 9 (J and Z are not in the data set)"
        )
    if pixels.min() < 0 or pixels.max() > 255:
        raise UserError(f"{path}: pixel values must be 0-255, found {pixels.min()}..{pixels.max()}")
    images = torch.from_numpy(pixels.astype(np.uint8)).view(-1, 28, 28)
    return TensorSplit(images, torch.from_numpy(label_to_class(labels)))


def write_synthetic_csv(folder: Path, n_train: int = 960, n_test: int = 240,
                        seed: int = 0) -> Path:
    """Small CSVs in the real format: class c is the binary code of c + 1 drawn as up to five
    full-width bright stripes (left-right symmetric, so horizontal flips keep the class), plus
    noise. Not sign language; for offline runs and tests."""
    folder.mkdir(parents=True, exist_ok=True)
    gen = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        classes = np.arange(n) % 24
        images = gen.integers(0, 60, (n, 28, 28))
        for bit in range(5):
            on = ((classes + 1) >> bit) & 1 == 1
            images[on, 3 + 5 * bit : 5 + 5 * bit, 2:26] += 180
        labels = np.where(classes < 9, classes, classes + 1)
        table = np.concatenate([labels[:, None], np.clip(images, 0, 255).reshape(n, -1)], 1)
        np.savetxt(folder / FILES[split], table, fmt="%d", delimiter=",",
                   header=",".join(HEADER), comments="")
    return folder


class SignMNISTData(InMemoryData):
    """The two CSVs of ``root`` as uint8 tensors, with the seed's augmentation for training.

    Args:
        root: folder with sign_mnist_train.csv and sign_mnist_test.csv.
        synthetic: ignore ``root`` and generate small CSVs of the same format (offline runs).
        augment: rotation 10 degrees, zoom 0.1, shifts 0.1, horizontal flip (training only).
    """

    class_names = LETTERS

    def __init__(self, root: str, synthetic: bool = False, augment: bool = True,
                 synthetic_dir: str | None = None) -> None:
        if synthetic:
            import tempfile

            folder = write_synthetic_csv(Path(synthetic_dir or tempfile.mkdtemp()))
        else:
            folder = Path(root).expanduser()
        paths = {split: find_csv(folder, split) for split in FILES}
        missing = [FILES[s] for s, p in paths.items() if p is None]
        if missing:
            raise UserError(
                f"Sign Language MNIST not found in {folder} (missing {', '.join(missing)}): "
                "download sign_mnist_train.csv and sign_mnist_test.csv from Kaggle "
                "(datamunge/sign-language-mnist) into data.root, or run offline on generated "
                "data with data.synthetic=true"
            )
        self.train, self.test = read_csv(paths["train"]), read_csv(paths["test"])
        self.augmentation = RandomAffine(10.0, 0.1, 0.1, hflip=True) if augment else None
        what = ("SYNTHETIC stripes in the Sign Language MNIST CSV format (NOT sign language)"
                if synthetic else f"Sign Language MNIST from {folder}")
        self.description = (
            f"{what}: {len(self.train):,} train / {len(self.test):,} test images, 24 letters"
            + (", augmented" if augment else "")
        )

    @staticmethod
    def transform(inputs: torch.Tensor) -> torch.Tensor:
        return inputs.float().div_(255.0)

    def as_images(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs.float().div(255.0).unsqueeze(1)

    @staticmethod
    def load_image(path: Path) -> torch.Tensor:
        """Any image file as one raw 28 x 28 uint8 grey image, as in the CSVs."""
        from PIL import Image

        with Image.open(path) as image:
            grey = image.convert("L").resize((28, 28), Image.BILINEAR)
            return torch.from_numpy(np.asarray(grey, dtype=np.uint8).copy())
