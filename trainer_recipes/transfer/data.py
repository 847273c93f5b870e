"""An image folder for transfer learning: ``root/train/<class>/*`` and ``root/valid/<class>/*``
(or ``root/test/<class>/*``), the layout of Keras' ``flow_from_directory`` and torchvision's
``ImageFolder``. Classes are the sub-folder names, sorted; the same classes must appear in both
splits.

Images stay on disk. DataLoader workers decode each one (any format PIL reads, whatever its
extension says), squash it to ``image_size`` x ``image_size`` RGB as Keras' ``target_size``
does, and hand over uint8; the training device converts to floats with ImageNet's mean and
standard deviation (what the pretrained VGG16 weights expect) and applies the augmentation to
the whole batch. Every file is test-decoded once at start (JPEGs at 1/8 scale, which is cheap):
one that fails is skipped with a warning naming it, before any batch order is drawn.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from trainer.data import InMemoryData
from trainer.data.augment import RandomAffine
from trainer.data.datasets import DatasetSplit
from trainer.data.files import FileDataset
from trainer.errors import UserError

log = logging.getLogger(__name__)

MEAN = (0.485, 0.456, 0.406)  # ImageNet, RGB, on [0, 1]
STD = (0.229, 0.224, 0.225)
EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
EVAL_SPLITS = ("valid", "test")


def decode_image(path: Path, image_size: int) -> torch.Tensor:
    """One image file as 3 x size x size uint8 RGB (any size or mode; squashed, not cropped)."""
    from PIL import Image

    with Image.open(path) as image:
        image.draft("RGB", (image_size, image_size))  # JPEG: decode at a smaller scale
        rgb = image.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
        return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1)


class Decoder:
    """``decode_image`` at a fixed size, as a picklable callable for DataLoader workers."""

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size

    def __call__(self, path: Path) -> torch.Tensor:
        try:
            return decode_image(path, self.image_size)
        except (OSError, ValueError) as exc:
            raise UserError(f"{path} could not be decoded during training: {exc}") from None


def undecodable(path: Path) -> str | None:
    """Why PIL cannot decode ``path``, or None when it can."""
    from PIL import Image

    try:
        decode_image(path, 8)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def scan_split(folder: Path) -> dict[str, list[Path]]:
    """Class name -> its image files (sorted), for one split folder; undecodable files are
    skipped with a warning naming each."""
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(
            f"{folder} has no class folders; put each class's images in its own sub-folder "
            f"({folder}/<class>/*.jpg)"
        )
    found = {}
    for cls in classes:
        files = sorted(p for p in cls.iterdir()
                       if p.is_file() and p.suffix.lower() in EXTENSIONS)
        good = []
        for path in files:
            why = undecodable(path)
            if why is None:
                good.append(path)
            else:
                log.warning("skipping %s: it does not decode as an image (%s)", path, why)
        if not good:
            raise UserError(
                f"class folder {cls} has no readable images ({len(files)} image files, "
                f"{', '.join(sorted(EXTENSIONS))}); add images or remove the folder"
            )
        found[cls.name] = good
    return found


def write_synthetic_folder(folder: Path, n_train: int = 48, n_valid: int = 16,
                           seed: int = 0) -> Path:
    """A small image folder in the real layout: class ``circle`` is a bright disk on noise,
    ``no_circle`` noise alone, as JPEGs of varied sizes. Not photos; for offline runs and
    tests."""
    from PIL import Image

    gen = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("valid", n_valid)):
        for i in range(n):
            cls = ("circle", "no_circle")[i % 2]
            h, w = (int(v) for v in gen.integers(40, 96, size=2))
            pixels = gen.integers(0, 120, (h, w, 3))
            if cls == "circle":
                yy, xx = np.mgrid[:h, :w]
                cy, cx = gen.uniform(0.35, 0.65) * h, gen.uniform(0.35, 0.65) * w
                r = gen.uniform(0.2, 0.3) * min(h, w)
                pixels[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] += 130
            out = folder / split / cls
            out.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
                out / f"{cls}_{i}.jpg", quality=90
            )
    return folder


class ImageFolderData(InMemoryData):
    """The splits of an image folder, decoded in DataLoader workers: train/, and valid/ and
    test/ where both exist (validation and test); where there is only one of them (the
    doggy-door set has train/ and valid/), it is the test split and the run holds out
    ``data.val_fraction`` of train/ for validation.

    Args:
        root: the folder holding train/ and valid/ and/or test/.
        image_size: images are resized to this square size (224 for ImageNet models).
        augment: rotation 10 degrees, zoom 0.1, shifts 0.1, horizontal flip (training only).
        workers: DataLoader worker processes per training process (0: decode inline).
        synthetic: ignore ``root`` and generate a small folder of the same layout (offline).
        synthetic_dir: where to write it (null: a fresh temporary folder).
    """

    def __init__(self, root: str, image_size: int = 224, augment: bool = True,
                 workers: int = 2, synthetic: bool = False,
                 synthetic_dir: str | None = None) -> None:
        if image_size < 32:
            raise UserError(f"data.image_size={image_size} is too small: VGG16 halves it five "
                            "times; use 32 or more (224 for ImageNet weights)")
        if workers < 0:
            raise UserError(f"data.workers={workers} must be 0 or more")
        folder = (write_synthetic_folder(Path(synthetic_dir or tempfile.mkdtemp()))
                  if synthetic else Path(root).expanduser())
        train_dir = folder / "train"
        eval_dir = next((folder / s for s in EVAL_SPLITS if (folder / s).is_dir()), None)
        if not train_dir.is_dir() or eval_dir is None:
            raise UserError(
                f"image folder {folder} needs train/ and valid/ (or test/) sub-folders with one "
                "folder of images per class (missing "
                f"{'train/' if not train_dir.is_dir() else 'valid/ or test/'}); point "
                "data.root at it, or run offline on generated images with data.synthetic=true"
            )
        val_dir = folder / "valid" if (folder / "test").is_dir() and (folder / "valid").is_dir() \
            else None
        if val_dir is not None:
            eval_dir = folder / "test"
        train, test = scan_split(train_dir), scan_split(eval_dir)
        val = scan_split(val_dir) if val_dir is not None else None
        for other, found in ((eval_dir, test), (val_dir, val)):
            if found is not None and set(train) != set(found):
                raise UserError(
                    f"class folders differ between {train_dir} ({', '.join(train)}) and "
                    f"{other} ({', '.join(found)}); every split needs the same classes"
                )
        if len(train) < 2:
            raise UserError(
                f"{train_dir} has a single class ({next(iter(train))}); a classifier needs at "
                "least two class folders"
            )
        self.class_names = list(train)
        decoder = Decoder(image_size)
        self.train, self.test = (self._split(found, decoder, workers) for found in (train, test))
        self.val = self._split(val, decoder, workers) if val is not None else None
        self.augmentation = RandomAffine(10.0, 0.1, 0.1, hflip=True) if augment else None
        what = ("SYNTHETIC circles in an image folder (NOT photos)" if synthetic
                else f"image folder {folder}")
        counts = ", ".join(f"{c} {len(train[c])}/{len(test[c])}" for c in self.class_names)
        self.description = (
            f"{what}: {len(self.train):,} train / "
            + (f"{len(self.val):,} valid / " if self.val is not None else "")
            + f"{len(self.test):,} {eval_dir.name} images "
            f"({counts}), {image_size}x{image_size}" + (", augmented" if augment else "")
        )

    def _split(self, found: dict[str, list[Path]], decoder: Decoder, workers: int
               ) -> DatasetSplit:
        files = [p for c in self.class_names for p in found[c]]
        targets = torch.tensor([i for i, c in enumerate(self.class_names) for _ in found[c]])
        return DatasetSplit(FileDataset(files, targets, decoder), workers=workers)

    @staticmethod
    def transform(inputs: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(MEAN, device=inputs.device).view(1, 3, 1, 1)
        std = torch.tensor(STD, device=inputs.device).view(1, 3, 1, 1)
        return inputs.float().div_(255.0).sub_(mean).div_(std)

    def as_images(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs.float().div(255.0)

    def model_kwargs(self) -> dict:
        return {"num_classes": len(self.class_names)}

    def state_dict(self) -> dict:
        return {"class_names": self.class_names}

    @staticmethod
    def load_image(path: Path, image_size: int = 224) -> torch.Tensor:
        """Any image file as the raw uint8 input a model trained on this data takes."""
        return decode_image(path, image_size)
