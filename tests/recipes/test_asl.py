"""The ASL recipe: Sign Language MNIST CSVs, batched augmentation, training and prediction."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import SHARED_DATA, run, train_in_process
from trainer.data import InMemoryLoader, TensorSplit
from trainer.data.augment import RandomAffine
from trainer.errors import UserError
from trainer_recipes.asl.data import HEADER, LETTERS, read_csv, write_synthetic_csv

SYNTHETIC = ("recipe=asl_cnn", "data.synthetic=true", "logger.sample_predictions=4")


def test_labels_map_to_24_letters_without_j_and_z(tmp_path):
    folder = write_synthetic_csv(tmp_path, n_train=48, n_test=24)
    split = read_csv(folder / "sign_mnist_train.csv")
    assert split.inputs.shape == (48, 28, 28) and split.inputs.dtype == torch.uint8
    assert sorted(set(split.targets.tolist())) == list(range(24))
    assert len(LETTERS) == 24 and "J" not in LETTERS and LETTERS[9] == "K"


@pytest.mark.parametrize("case,message", [
    ("header", "starts with 'label,pixel1,...,pixel784'"),
    ("pixels", "does not have 785 integer values"),
    ("label9", "label 9 on data row 2 is out of range"),
    ("label25", "label 25 on data row 2 is out of range"),
])
def test_bad_csv_names_the_file_and_the_problem(tmp_path, case, message):
    rows = [[0] + [0] * 784, [3] + [0] * 784]
    header = HEADER
    if case == "header":
        header = ["label"] + [f"px{i}" for i in range(784)]
    elif case == "pixels":
        rows[1] = rows[1][:-1]
    else:
        rows[1][0] = int(case[5:])
    path = tmp_path / "sign_mnist_train.csv"
    path.write_text("\n".join([",".join(header)] + [",".join(map(str, r)) for r in rows]) + "\n")
    with pytest.raises(UserError, match=message) as info:
        read_csv(path)
    assert str(path) in str(info.value)


def test_missing_files_say_where_to_get_them_and_the_offline_switch(tmp_path):
    with pytest.raises(UserError, match=r"missing sign_mnist_train.csv, sign_mnist_test.csv.*"
                                        r"Kaggle.*data.synthetic=true"):
        train_in_process(tmp_path / "run", "recipe=asl_cnn", f"data.root={tmp_path}")


def _top_heavy(n: int) -> torch.Tensor:
    images = torch.zeros(n, 28, 28)
    images[:, 2:10, 4:12] = 1.0  # a block in the top-left corner
    return images


def test_augmentation_without_ranges_is_the_identity_and_flip_is_left_right_only():
    images = _top_heavy(64)
    gen = torch.Generator().manual_seed(0)
    same = RandomAffine(0, 0, 0, hflip=False)(images, gen)
    assert torch.allclose(same, images, atol=1e-6)
    flipped = RandomAffine(0, 0, 0, hflip=True)(images, torch.Generator().manual_seed(0))
    is_same = [(torch.allclose(f, i, atol=1e-6), torch.allclose(f, i.flip(-1), atol=1e-6))
               for f, i in zip(flipped, images, strict=True)]
    assert all(a or b for a, b in is_same) and 10 < sum(b for _, b in is_same) < 54
    # Full augmentation never turns an image upside down: the block stays in the top half.
    out = RandomAffine(10, 0.1, 0.1, hflip=True)(images, torch.Generator().manual_seed(1))
    assert bool((out[:, :14].sum((1, 2)) > 5 * out[:, 14:].sum((1, 2))).all())
    assert not torch.allclose(out[0], out[1])  # each sample gets its own transform


def test_a_sample_is_augmented_the_same_on_any_number_of_workers():
    split = TensorSplit((255 * _top_heavy(64)).to(torch.uint8), torch.zeros(64, dtype=torch.long))
    augment = RandomAffine()

    def batches(rank: int, world: int):
        loader = InMemoryLoader(split, 16, seed=3, rank=rank, world_size=world,
                                prepare=lambda b: (b[0].float() / 255, b[1]),
                                augment=augment)
        return [x for x, _ in loader.epoch(1)]

    one = batches(0, 1)
    two = [torch.cat(pair) for pair in zip(batches(0, 2), batches(1, 2), strict=True)]
    assert all(torch.equal(a, b) for a, b in zip(one, two, strict=True))


def test_synthetic_offline_run_learns_and_says_what_it_trained_on(tmp_path, capsys):
    metrics = train_in_process(tmp_path, *SYNTHETIC, "trainer.epochs=3")
    assert metrics["test_accuracy"] > 0.9
    first = metrics["history"][0]["val/loss"]
    assert metrics["test_loss"] < first
    assert "SYNTHETIC stripes in the Sign Language MNIST CSV format" in capsys.readouterr().out


def test_predict_prints_the_letter_of_each_image_file(tmp_path):
    from PIL import Image

    train_in_process(tmp_path / "run", *SYNTHETIC, "trainer.epochs=3",
                     f"data.synthetic_dir={tmp_path / 'data'}")
    test = read_csv(tmp_path / "data" / "sign_mnist_test.csv")
    paths = []
    for i in range(5):
        # Colour and 3x the size: trainer-predict converts to grey and resizes to 28x28.
        grey = Image.fromarray(test.inputs[i].numpy()).resize((84, 84), Image.NEAREST)
        paths.append(tmp_path / f"sign{i}.png")
        grey.convert("RGB").save(paths[-1])
    result = subprocess.run([sys.executable, "-m", "trainer.tools.predict", str(tmp_path / "run"),
                             *map(str, paths)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    expected = [LETTERS[int(c)] for c in test.targets[:5]]
    assert [line.split(": ")[1].split(" ")[0] for line in lines] == expected
    assert lines[0].startswith(f"{paths[0]}: ")


def test_predict_names_an_unreadable_image(tmp_path):
    train_in_process(tmp_path / "run", *SYNTHETIC, "trainer.max_steps=2")
    bogus = tmp_path / "not_an_image.png"
    bogus.write_text("hello")
    result = subprocess.run([sys.executable, "-m", "trainer.tools.predict", str(tmp_path / "run"),
                             str(bogus)], capture_output=True, text=True)
    assert result.returncode == 2
    assert f"trainer-predict: error: cannot read image {bogus}" in result.stderr


@pytest.mark.slow
def test_real_sign_mnist_sample_trains(tmp_path):
    folder = SHARED_DATA / "sign_mnist"
    if not list(folder.glob("sign_mnist_train*.csv")):
        pytest.skip(f"no Sign Language MNIST sample in {folder}")
    metrics = train_in_process(tmp_path, "recipe=asl_cnn", f"data.root={folder}",
                               "trainer.epochs=6")
    losses = [h["val/loss"] for h in metrics["history"]]
    assert losses[-1] < losses[0] and metrics["test_accuracy"] > 1 / 24


def test_asl_runs_on_two_gloo_workers_with_identical_replicas(tmp_path):
    result = run("torchrun", 2, *SYNTHETIC, "trainer.max_steps=6", "trainer.checkpoint_every=3",
                 f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert (Path(tmp_path) / "run" / "metrics.json").exists()
    assert '"world_size": 2' in (tmp_path / "run" / "metrics.json").read_text()
    # Every checkpoint (steps 3 and 6) compared the two replicas' weights and found them equal.
    assert "replicas diverged" not in result.stderr
