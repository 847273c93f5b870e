"""The MNIST recipe on the real LeCun files (skipped where TRAINER_DATA_DIR has no MNIST)."""

from __future__ import annotations

import pytest

from tests.helpers import train_in_process
from tests.helpers.images import write_digit_photo
from trainer.tools.predict import predict
from trainer_recipes.mnist.data import MNISTData


@pytest.mark.slow
def test_real_mnist_files_load_with_official_counts(real_mnist):
    data = MNISTData(str(real_mnist), download=False)
    assert (len(data.train), len(data.test)) == (60000, 10000)
    assert data.train.targets.bincount().tolist()[:3] == [5923, 6742, 5958]


@pytest.mark.slow
def test_short_real_mnist_run_reaches_97_percent(tmp_path, real_mnist):
    metrics = train_in_process(
        tmp_path,
        "recipe=mnist",
        f"data.root={real_mnist}",
        "data.download=false",
        "trainer.epochs=3",
        "dist.threads_per_worker=1",
        "logger.tensorboard=false",
    )
    assert metrics["test_accuracy"] >= 0.97, metrics
    # trainer-predict on photos of test digits (dark on light, 12x larger, in colour).
    test = MNISTData(str(real_mnist), download=False).test
    paths = [write_digit_photo(test.inputs[i], 255, tmp_path / f"d{i}.png", scale=4)
             for i in range(50)]
    found = predict(tmp_path, paths)
    right = sum(int(name) == int(t) for (_, name, _), t in zip(found, test.targets[:50],
                                                              strict=True))
    assert right >= 45, right


@pytest.mark.slow
def test_lr_find_suggestion_trains_mnist_to_97_percent_in_2_epochs(tmp_path, real_mnist):
    from trainer.tools.lr_find import lr_find

    common = ("recipe=mnist", f"data.root={real_mnist}", "data.download=false",
              "dist.threads_per_worker=1", "logger.tensorboard=false",
              "logger.progress_bar=false")
    suggested, lowest, _ = lr_find(list(common), tmp_path / "find", 1e-5, 10.0, 100)
    assert suggested < lowest
    metrics = train_in_process(tmp_path / "run", *common, f"optimizer.lr={suggested}",
                               "trainer.epochs=2")
    assert metrics["test_accuracy"] >= 0.97, (suggested, metrics["test_accuracy"])
