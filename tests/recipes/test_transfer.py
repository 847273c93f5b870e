"""The VGG16 transfer recipe: image folders decoded in workers, staged training, resume."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.helpers import (
    EXACT,
    FLOAT64,
    SHARED_DATA,
    VGG_SMALL,
    max_difference,
    run,
    train_in_process,
    weights,
)
from trainer.data import InMemoryLoader, TensorSplit
from trainer.data.memory import eval_batches, prepare_batch
from trainer.engine.stages import freeze
from trainer.errors import UserError
from trainer.tasks import Binary
from trainer_recipes.transfer.data import ImageFolderData, write_synthetic_folder
from trainer_recipes.transfer.model import VGG16Transfer

SMALL = ("recipe=vgg16_transfer", *VGG_SMALL)
# 48 training images at batch 16: 3 steps per epoch; one epoch per stage (every image trains:
# the stage tests count steps; the validation split is tested in tests/data/).
TWO_STAGES = (*SMALL, "data.batch_size=16", "trainer.stages.0.epochs=1",
              "trainer.stages.1.epochs=1", "logger.tensorboard=false", "data.val_fraction=0")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_synthetic_folder(tmp_path_factory.mktemp("images"), n_train=24, n_valid=8)


def _checkpoint(run_dir: Path, name: str = "last.pt") -> dict:
    return torch.load(run_dir / "checkpoints" / name, weights_only=False)


# --- the image folder ------------------------------------------------------------------------

def test_folder_classes_are_sorted_subfolders_and_images_arrive_as_uint8(folder):
    data = ImageFolderData(str(folder), image_size=40, augment=False, workers=0)
    assert data.class_names == ["circle", "no_circle"]
    assert len(data.train) == 24 and len(data.test) == 8
    assert data.train.dataset.targets.tolist() == [0] * 12 + [1] * 12
    image = data.train[0][0]
    assert image.shape == (3, 40, 40) and image.dtype == torch.uint8
    # ImageNet normalisation: a mid-grey pixel becomes (0.5 - mean) / std per channel.
    grey = torch.full((1, 3, 2, 2), 128, dtype=torch.uint8)
    assert torch.allclose(data.transform(grey)[0, :, 0, 0],
                          torch.tensor([0.0741, 0.2052, 0.4265]), atol=1e-3)


def test_a_webp_named_jpg_decodes_and_a_broken_image_is_skipped_with_a_warning(
        tmp_path, caplog):
    root = write_synthetic_folder(tmp_path, n_train=8, n_valid=4)
    Image.new("RGB", (50, 30), (200, 10, 10)).save(root / "train" / "circle" / "w.jpg", "WEBP")
    broken = root / "train" / "no_circle" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with caplog.at_level(logging.WARNING):
        data = ImageFolderData(str(root), image_size=32, augment=False, workers=0)
    assert len(data.train) == 9  # 8 + the WebP; the broken file is out
    assert str(broken) in caplog.text and "skipping" in caplog.text
    webp = data.train.dataset.files.index(root / "train" / "circle" / "w.jpg")
    assert data.train[webp][0][0].float().mean() > 150  # red channel of the red image


@pytest.mark.parametrize("case,message", [
    ("no_valid", "needs train/ and valid/ \\(or test/\\).*data.synthetic=true"),
    ("empty_class", "class folder .*no_circle has no readable images"),
    ("single_class", "has a single class \\(circle\\); a classifier needs at least two"),
    ("differ", "class folders differ between .*train.*circle, no_circle.*valid.*circle, other"),
    ("no_classes", "has no class folders"),
])
def test_bad_image_folders_name_the_folder_and_the_fix(tmp_path, case, message):
    root = write_synthetic_folder(tmp_path, n_train=4, n_valid=4)
    if case == "no_valid":
        for p in (root / "valid").rglob("*.jpg"):
            p.unlink()
        for d in sorted((root / "valid").rglob("*"), reverse=True):
            d.rmdir()
        (root / "valid").rmdir()
    elif case == "empty_class":
        for p in (root / "train" / "no_circle").iterdir():
            p.write_bytes(b"not an image")
    elif case == "single_class":
        for split in ("train", "valid"):
            for p in (root / split / "no_circle").iterdir():
                p.unlink()
            (root / split / "no_circle").rmdir()
    elif case == "differ":
        (root / "valid" / "no_circle").rename(root / "valid" / "other")
    else:
        for p in (root / "train").rglob("*.jpg"):
            p.unlink()
        for d in (root / "train").iterdir():
            d.rmdir()
    with pytest.raises(UserError, match=message):
        ImageFolderData(str(root), image_size=32, workers=0)


def test_file_backed_batches_equal_in_memory_batches_on_any_rank(folder):
    """Same order, same pixels: the file path is only another way to fetch rows."""
    data = ImageFolderData(str(folder), image_size=32, augment=True, workers=2)
    held = TensorSplit(torch.stack([data.train[i][0] for i in range(len(data.train))]),
                       data.train.dataset.targets)
    prepare = partial(prepare_batch, transform=data.transform)
    for rank in range(2):
        kwargs = dict(seed=3, rank=rank, world_size=2, prepare=prepare, augment=data.augmentation)
        from_files = list(InMemoryLoader(data.train, 8, **kwargs).epoch(1, start=1))
        in_memory = list(InMemoryLoader(held, 8, **kwargs).epoch(1, start=1))
        assert len(from_files) == len(in_memory) == 2
        for (x, y), (x2, y2) in zip(from_files, in_memory, strict=True):
            assert torch.equal(x, x2) and torch.equal(y, y2)
    evaluated = torch.cat([x for x, _ in eval_batches(data.test, 3, prepare=prepare)])
    assert torch.equal(evaluated, data.transform(torch.stack([data.test[i][0] for i in range(8)])))


# --- the model and its weights ---------------------------------------------------------------

def test_local_weights_load_into_the_backbone_and_bad_files_are_refused(tmp_path):
    source = VGG16Transfer(pretrained=False)
    # The layout of torchvision's file: features.* (the classifier is left out here).
    torch.save({f"features.{k}": v for k, v in source.backbone.state_dict().items()},
               tmp_path / "vgg16.pth")
    model = VGG16Transfer(pretrained=True, weights=str(tmp_path / "vgg16.pth"))
    model.load_pretrained()
    assert max_difference(model.backbone.state_dict(), source.backbone.state_dict()) == 0
    torch.save({"fc.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="is not a VGG16 state dict"):
        VGG16Transfer(weights=str(tmp_path / "other.pth")).load_pretrained()
    with pytest.raises(UserError, match="no such file"):
        VGG16Transfer(weights=str(tmp_path / "missing.pth")).load_pretrained()


def _offline() -> bool:
    try:
        socket.getaddrinfo("download.pytorch.org", 443)
    except OSError:
        return True
    return False


@pytest.mark.skipif(not _offline(), reason="download.pytorch.org resolves: it would download")
def test_offline_without_weights_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(UserError, match="cannot be downloaded.*model.weights=PATH.*"
                                        "model.pretrained=false"):
        train_in_process(tmp_path / "run", *SMALL, "model.pretrained=true")


def test_binary_task_is_bce_on_logits_with_accuracy_of_positive_logits():
    logits, targets = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1, 0, 0])
    task = Binary()
    expected = -(torch.log(torch.sigmoid(torch.tensor(2.0))) + torch.log(torch.sigmoid(
        torch.tensor(1.0))) + torch.log(1 - torch.sigmoid(torch.tensor(0.5)))) / 3
    assert torch.allclose(task.loss(logits, targets), expected)
    assert int(task.count_correct(logits, targets)) == 2
    with pytest.raises(UserError, match="task=classification for more than two classes"):
        task.loss(torch.zeros(3, 4), targets)


# --- stages ----------------------------------------------------------------------------------

def test_a_frozen_submodule_stays_in_eval_mode_and_unfreezing_releases_it():
    model = torch.nn.Sequential(torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 1))
    freeze(model, ["0"])
    model.train()
    assert not model[0].training and model[1].training
    assert [p.requires_grad for p in model.parameters()] == [False, False, True, True]
    freeze(model, [])
    model.train()
    assert model[0].training and all(p.requires_grad for p in model.parameters())
    with pytest.raises(UserError, match="no submodule 'backbone'.*top-level submodules are 0, 1"):
        freeze(model, ["backbone"])


def test_stage_one_trains_only_the_head_and_stage_two_fine_tunes_everything_with_rmsprop(
        tmp_path):
    metrics = train_in_process(tmp_path, *TWO_STAGES)
    assert metrics["steps"] == 6
    first, last = _checkpoint(tmp_path, "step-00000003.pt"), _checkpoint(tmp_path)
    assert first["progress"]["stage"] == 0 and last["progress"]["stage"] == 1
    backbone = {k: v for k, v in first["model"].items() if k.startswith("backbone.")}
    after = {k: v for k, v in last["model"].items() if k.startswith("backbone.")}
    assert max_difference(backbone, after) > 0  # stage 2 moved the backbone
    # Stage 1: Adam over the head only (2 tensors); stage 2: RMSprop at 1e-5 over all 28.
    assert len(first["optimizer"]["state"]) == 2 and "exp_avg" in first["optimizer"]["state"][0]
    assert len(last["optimizer"]["state"]) == 28
    assert "square_avg" in last["optimizer"]["state"][0]
    assert last["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-5)


def test_stage_one_leaves_the_backbone_exactly_as_loaded(tmp_path):
    train_in_process(tmp_path, *TWO_STAGES, "trainer.max_steps=3")
    torch.manual_seed(0)
    fresh = VGG16Transfer(pretrained=False)  # the same seed, so the same initial weights
    saved = _checkpoint(tmp_path)["model"]
    assert max_difference({k[9:]: v for k, v in saved.items() if k.startswith("backbone.")},
                          fresh.backbone.state_dict()) == 0
    assert not torch.equal(saved["head.weight"], fresh.head.weight)


@pytest.mark.parametrize("stop", [3, 4], ids=["at_the_stage_switch", "inside_stage_two"])
def test_resume_continues_in_the_right_stage_bit_exactly(tmp_path, stop):
    whole = train_in_process(tmp_path / "whole", *TWO_STAGES)
    train_in_process(tmp_path / "parts", *TWO_STAGES, f"trainer.max_steps={stop}")
    resumed = train_in_process(tmp_path / "parts", *TWO_STAGES)
    assert resumed["resumed_from"] and resumed["steps"] == whole["steps"] == 6
    assert max_difference(weights(tmp_path / "whole"), weights(tmp_path / "parts")) == 0
    assert resumed["test_loss"] == whole["test_loss"]


def test_stage_epochs_must_add_up_to_the_run(tmp_path):
    with pytest.raises(UserError, match="trainer.epochs=5.*their 2 epochs"):
        train_in_process(tmp_path, *TWO_STAGES, "trainer.epochs=5")


def test_two_gloo_workers_reproduce_one_worker_across_the_stage_switch(tmp_path):
    # One decoding worker per rank: DataLoader processes forked after the process group.
    # Dropout on (0.2, per-sample masks) and augmentation on, in float64.
    # Two fine-tuning steps after the switch (float64 VGG steps are slow on a CPU).
    args = (*TWO_STAGES, FLOAT64, "trainer.max_steps=5", "dist.threads_per_worker=1",
            "data.workers=1")
    run("none", 1, *args, f"hydra.run.dir={tmp_path}/one", cwd=tmp_path)
    result = run("torchrun", 2, *args, f"hydra.run.dir={tmp_path}/two", cwd=tmp_path)
    assert "stage 2/2 'finetune' from epoch 1" in result.stdout
    assert max_difference(weights(tmp_path / "one"), weights(tmp_path / "two")) < EXACT


def test_trainer_predict_names_the_folder_classes(tmp_path, folder):
    train_in_process(tmp_path, *TWO_STAGES, "trainer.max_steps=2")
    image = next((folder / "valid" / "circle").iterdir())
    out = subprocess.run([sys.executable, "-m", "trainer.tools.predict", str(tmp_path), str(image)],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith(f"{image}: ") and ("circle (" in out or "no_circle (" in out)


# --- the real DLI folder ---------------------------------------------------------------------

@pytest.mark.slow
def test_the_doggy_door_folder_trains_a_few_steps_at_small_resolution(tmp_path):
    root = SHARED_DATA / "presidential_doggy_door"
    if not (root / "train" / "bo").is_dir():
        pytest.skip(f"doggy-door images not found under {root}")
    metrics = train_in_process(
        tmp_path, "recipe=vgg16_transfer", f"data.root={root}", "model.pretrained=false",
        "data.image_size=48", "trainer.stages.0.epochs=1", "trainer.stages.1.epochs=1",
        "trainer.max_steps=6", "data.workers=2",
    )
    assert metrics["steps"] == 6 and 0 < metrics["test_loss"] < 5
    # 30 valid images: accuracy is a multiple of 1/30.
    assert round(metrics["test_accuracy"] * 30, 6) == round(metrics["test_accuracy"] * 30)
    logged = json.loads((tmp_path / "metrics.json").read_text())
    assert logged["history"][0]["val/loss"] > 0
