"""MNIST from the four LeCun IDX files, and scikit-learn's 8x8 digits for offline runs."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import numpy as np
import torch

from trainer.data import InMemoryData, TensorSplit
from trainer.data.idx import read_idx
from trainer.errors import UserError
from trainer_recipes.mnist.images import digit_image

log = logging.getLogger(__name__)

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_MNIST_COUNTS = {"train": 60000, "test": 10000}
DIGIT_NAMES = [str(d) for d in range(10)]


def _find(root: Path, stem: str) -> Path | None:
    # torchvision's download lands in MNIST/raw/; users often unpack there too.
    for folder in (root, root / "MNIST" / "raw"):
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                return folder / name
    return None


def _download(root: Path) -> None:
    """Fetch MNIST with torchvision (it verifies checksums), bounded so offline fails fast."""
    from torchvision.datasets import MNIST

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)
    try:
        MNIST(str(root), train=True, download=True)
        MNIST(str(root), train=False, download=True)
    except Exception as exc:  # any network or mirror failure means "not downloadable here"
        log.debug("MNIST download failed: %s", exc)
        why = " ".join(str(exc).split())  # torchvision's message spans lines
        raise UserError(_missing_message(root, f"download failed: {why[:160]}")) from None
    finally:
        socket.setdefaulttimeout(previous)


def _missing_message(root: Path, why: str) -> str:
    names = ", ".join(stem + ".gz" for stem in MNIST_FILES.values())
    return (
        f"MNIST not found in {root} ({why}): put {names} there "
        "(or set data.root=DIR or TRAINER_DATA_DIR=DIR with DIR/mnist holding them)"
    )


class MNISTData(InMemoryData):
    """The 60,000 + 10,000 MNIST images as uint8 tensors of shape N x 28 x 28."""

    class_names = DIGIT_NAMES

    def __init__(self, root: str, download: bool = True) -> None:
        folder = Path(root).expanduser()
        paths = {key: _find(folder, stem) for key, stem in MNIST_FILES.items()}
        if None in paths.values():
            if not download:
                raise UserError(_missing_message(folder, "data.download=false"))
            log.info("MNIST not in %s; downloading it with torchvision", folder)
            _download(folder)
            paths = {key: _find(folder, stem) for key, stem in MNIST_FILES.items()}
        splits = {}
        for split in ("train", "test"):
            images = read_idx(paths[f"{split}_images"])
            labels = read_idx(paths[f"{split}_labels"])
            if images.dim() != 3 or images.shape[1:] != (28, 28):
                raise UserError(
                    f"{paths[f'{split}_images']} holds images of shape {tuple(images.shape)}, "
                    "expected N x 28 x 28; it is not an MNIST image file"
                )
            if labels.dim() != 1 or len(labels) != len(images):
                raise UserError(
                    f"{paths[f'{split}_labels']} holds {tuple(labels.shape)} labels for "
                    f"{len(images)} images; the image and label files do not belong together"
                )
            if len(labels) == 0:
                raise UserError(f"{paths[f'{split}_images']} holds no images; the {split} split "
                                "is empty, replace the file with the original")
            if int(labels.max()) > 9:
                raise UserError(f"{paths[f'{split}_labels']} has labels above 9; not MNIST")
            if len(images) != _MNIST_COUNTS[split]:
                log.warning(
                    "%s has %d images, the official MNIST %s split has %d",
                    paths[f"{split}_images"], len(images), split, _MNIST_COUNTS[split],
                )
            splits[split] = TensorSplit(images, labels.long())
        self.train, self.test = splits["train"], splits["test"]
        self.description = (
            f"MNIST from {folder}: {len(self.train):,} train / {len(self.test):,} test images"
        )

    @staticmethod
    def transform(inputs: torch.Tensor) -> torch.Tensor:
        return inputs.float().div_(255.0)

    def as_images(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs.float().div(255.0).unsqueeze(1)

    @staticmethod
    def load_image(path: Path) -> torch.Tensor:
        """Any image file of one digit as a raw 28 x 28 uint8 MNIST image (trainer-predict)."""
        pixels = digit_image(path, frame=28, box=20)
        return torch.from_numpy((pixels * 255).round().astype("uint8"))


def bundled_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits file as ``(1797 x 8 x 8 uint8 images 0..16, labels)``, read
    where the installed package keeps it: what ``sklearn.datasets.load_digits`` reads, without
    importing ``sklearn.datasets`` (scipy.stats and the rest: most of a second of every run's
    start-up, for a 1,797-row file)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # (finds the package; imports nothing)
    folders = spec.submodule_search_locations if spec is not None else None
    path = Path(next(iter(folders))) / "datasets" / "data" / "digits.csv.gz" if folders else None
    if path is not None and path.is_file():
        rows = np.loadtxt(path, delimiter=",")
        images, labels = rows[:, :-1].reshape(-1, 8, 8), rows[:, -1]
    else:  # a layout we do not know: the public loader
        from sklearn.datasets import load_digits

        digits = load_digits()
        images, labels = digits.images, digits.target
    return torch.from_numpy(images).to(torch.uint8), torch.from_numpy(labels).long()


class DigitsData(InMemoryData):
    """scikit-learn's bundled 8x8 digits (values 0..16), split deterministically.

    It ships inside the scikit-learn package, so it needs no network. It is a different,
    much smaller and easier data set than MNIST, and every run says so.
    """

    class_names = DIGIT_NAMES

    def __init__(self, root: str = "sklearn-bundled", test_fraction: float = 0.2) -> None:
        if not 0.0 < test_fraction < 1.0:
            raise UserError(f"data.test_fraction must be in (0, 1), got {test_fraction}")
        images, labels = bundled_digits()
        n_test = round(len(images) * test_fraction)
        # The file is ordered by writer, not class; the last rows are a fair held-out set.
        self.train = TensorSplit(images[:-n_test], labels[:-n_test])
        self.test = TensorSplit(images[-n_test:], labels[-n_test:])
        self.description = (
            "scikit-learn's bundled 8x8 handwritten digits (NOT MNIST): "
            f"{len(self.train):,} train / {len(self.test):,} test images"
        )

    @staticmethod
    def transform(inputs: torch.Tensor) -> torch.Tensor:
        return inputs.float().div_(16.0)

    def as_images(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs.float().div(16.0).unsqueeze(1)

    @staticmethod
    def load_image(path: Path) -> torch.Tensor:
        """Any image file of one digit as a raw 8 x 8 image of values 0..16 (trainer-predict):
        these digits fill their frame."""
        pixels = digit_image(path, frame=32, box=32)
        blocks = pixels.reshape(8, 4, 8, 4).mean(axis=(1, 3))  # as the data set's 4x4 blocks
        return torch.from_numpy((blocks * 16).round().astype("uint8"))
