"""trainer-predict on digit image files: the digits default's model reads photos of digits
(dark ink on light paper, any size, in colour) as its own 8 x 8 inputs."""

from __future__ import annotations

import subprocess
import sys

import torch

from tests.helpers import train_in_process
from tests.helpers.images import write_digit_photo
from trainer_recipes.mnist.data import DigitsData


def test_predict_reads_digit_photos_for_the_digits_model(tmp_path):
    metrics = train_in_process(tmp_path / "run", "trainer.epochs=5",
                               "logger.sample_predictions=0", "logger.tensorboard=false")
    test = DigitsData().test
    paths = [write_digit_photo(test.inputs[i], 16, tmp_path / f"digit{i}.png")
             for i in range(40)]
    result = subprocess.run([sys.executable, "-m", "trainer.tools.predict",
                             str(tmp_path / "run"), *map(str, paths)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 40 and lines[0].startswith(f"{paths[0]}: ")
    predicted = [int(line.split(": ")[1].split(" ")[0]) for line in lines]
    right = sum(p == int(t) for p, t in zip(predicted, test.targets[:40], strict=True))
    # The model scores ~0.9 on the raw test inputs; the photos lose little on the way back.
    assert right / 40 >= metrics["test_accuracy"] - 0.1, (right, metrics["test_accuracy"])


def test_the_digits_are_read_as_scikit_learn_loads_them_without_importing_its_datasets():
    from sklearn.datasets import load_digits

    from trainer_recipes.mnist.data import bundled_digits

    images, labels = bundled_digits()
    digits = load_digits()
    assert images.shape == (1797, 8, 8) and images.dtype == torch.uint8
    assert (images.numpy() == digits.images).all() and (labels.numpy() == digits.target).all()
    # The default job's start-up does not pay for sklearn.datasets (scipy.stats...).
    code = ("import sys; from trainer_recipes.mnist.data import DigitsData; DigitsData(); "
            "print('sklearn.datasets' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
