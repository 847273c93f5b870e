"""trainer-predict on digit image files: the digits default's model reads photos of digits
(dark ink on light paper, any size, in colour) as its own 8 x 8 inputs."""

from __future__ import annotations

import subprocess
import sys

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
