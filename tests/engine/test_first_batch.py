"""A model or data that cannot fit the task is one line naming the problem, the sample and
the fix (trainer/engine/first_batch.py, the tasks' ``check``, the Dataset items'
diagnosis), not a traceback from the loss; the user's own exception is framed: one line saying
where, then their frames only (trainer/tools/user_traceback.py)."""

from __future__ import annotations

import pytest

import trainer
from tests.helpers import cli_in_process
from tests.helpers.broken import Items, Model
from trainer.errors import UserError

# Every row trains (no validation rows held out): the rows named are the rows each case spoils.
FIT = ["trainer.max_steps=4", "data.batch_size=16", "logger.progress_bar=false",
       "logger.sample_predictions=0", "data.val_fraction=0"]

MODELS = [
    ("extra row", "the first batch: the model returned 17 rows for a micro-batch of 16 samples"),
    ("scalar", "the first batch: the model returned a single number, not class scores"),
    ("one per sample", "the first batch: the model's output has shape (16,): Classification "
                       "takes one row of C class scores per sample"),
    ("tuple", "the first batch: the model returned a tuple(16x4 float32, 16x4 float32), not a "
              "tensor of class scores (N x C logits); return that tensor alone"),
    ("dict", "the first batch: the model returned a dict(logits: 16x4 float32), not a tensor "
             "of class scores"),
    ("integer", "the first batch: the model's output is int64, not floating point"),
    ("detached", "the first batch: the model's output is not in the autograd graph"),
    # (found when the optimizer is built: it used to blame the optimizer's arguments)
    ("frozen", "the model (Model) has every parameter frozen (requires_grad=False): nothing "
               "can train"),
]

DATA = [
    ("float labels", "the first batch: the labels are float32, not integers: the task takes "
                     "class indices 0..C-1 (torch.long)"),
    ("integral float labels", "the first batch: the labels are float32, not integers"),
    ("labels 10..", "the first batch: label 13 is outside the model's 4 classes (0..3): number "
                    "the classes 0..C-1, or make the model's output as wide as the classes "
                    "(its num_classes) (sample 47 of the training set)"),
    # Not in the first batch: found at the step that draws it, named by its index.
    ("negative label", "step 2: label -1 is outside the model's 4 classes (0..3)"),
    ("None item", "the training Dataset (Items): item 5 is None; __getitem__ must return the "
                  "sample"),
    ("None label", "the training Dataset (Items): item 5 holds None (tuple of 2)"),
    ("string labels", "the training Dataset (Items): item 47 has the label 'class 3', a "
                      "string: labels are numbers"),
    ("ragged", "the training Dataset (Items): item 5 has shapes [(7,), ()] where earlier items "
               "have [(8,), ()]"),
    ("wide input", "the first batch: a Linear layer of the model takes 8 features and got 16 "
                   "(torch: mat1 and mat2 shapes cannot be multiplied); make the model's input "
                   "width match the data's (its in_features=16"),
    ("len too big", "the training Dataset (Items): item 69 raised IndexError (index 69 is out "
                    "of bounds for dimension 0 with size 64) though len() is 74: __len__ must "
                    "count only the items"),
]


@pytest.mark.parametrize("kind,line", MODELS, ids=[k for k, _ in MODELS])
def test_a_model_output_that_cannot_fit_the_task_is_one_line(tmp_path, kind, line):
    with pytest.raises(UserError) as caught:
        trainer.fit(FIT, model=Model(kind), data=(Items(), Items(n=32)), run_dir=tmp_path)
    assert str(caught.value).startswith(line)
    assert not list(tmp_path.glob("checkpoints/step-*.pt"))  # before the first step


@pytest.mark.parametrize("kind,line", DATA, ids=[k for k, _ in DATA])
def test_dataset_items_that_cannot_be_trained_on_are_named_by_index(tmp_path, kind, line):
    with pytest.raises(UserError) as caught:
        trainer.fit(FIT, model=Model(), data=(Items(kind), Items(n=32)), run_dir=tmp_path)
    assert str(caught.value).startswith(line)


@pytest.mark.parametrize("args,line", [
    (["model.num_classes=5"], "the first batch: label 9 is outside the model's 5 classes "
                              "(0..4)"),
    (["model.in_features=784"], "the first batch: a Linear layer of the model takes 784 "
                                "features and got 64"),
    (["task=regression"], "the first batch: the model gives 10 value(s) per sample (shape "
                          "(64, 10)) for targets of shape (64,): regression compares them one "
                          "to one"),
    (["task=binary"], "the first batch: task=binary takes one logit per sample"),
    (["model.norm=batch", "data.batch_size=1"],
     "the first batch: BatchNorm got one value per channel (a micro-batch of 1 sample(s) per "
     "worker)"),
])
def test_config_that_cannot_fit_the_data_is_one_line_before_the_first_step(tmp_path, args,
                                                                             line):
    done = cli_in_process(*args, "trainer.max_steps=3", f"hydra.run.dir={tmp_path}/run",
                          cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"trainer: error: {line}" in done.stderr and "Traceback" not in done.stderr
    assert not list((tmp_path / "run").glob("checkpoints/step-*.pt"))


@pytest.mark.parametrize("split", ["validation", "test"])
def test_a_bad_label_of_a_validation_or_test_dataset_is_one_line_naming_it(tmp_path, split):
    # A Dataset is read item by item: its evaluation labels are first seen by the evaluation.
    bad = Items("negative label", n=32, at=7)
    data = (Items(), bad, Items(n=32)) if split == "test" else (Items(), Items(n=32), bad)
    with pytest.raises(UserError) as caught:
        trainer.fit(FIT, model=Model(), data=data, run_dir=tmp_path)
    assert str(caught.value) == (
        f"the {split} data: label -1 is outside the model's 4 classes (0..3): number the "
        "classes 0..C-1, or make the model's output as wide as the classes (its num_classes) "
        f"(sample 7 of the {split} set)")


def test_a_model_wider_than_the_labels_trains_and_says_so_once(tmp_path, caplog):
    trainer.fit(["model.num_classes=12", "trainer.max_steps=2"], run_dir=tmp_path)
    said = [r.getMessage() for r in caplog.records if "class outputs" in r.getMessage()]
    assert said == ["the model has 12 class outputs but the training labels are 0..9 (10 "
                    "classes): 2 output(s) never have a sample; make the model as wide as the "
                    "classes (its num_classes=10) unless that is on purpose"]


def test_a_task_with_its_own_forward_and_loss_is_not_checked_by_the_inherited_check(tmp_path):
    """Two outputs and a loss of its own: Classification's check (one tensor of scores) is
    not this task's, so it trains."""
    from trainer.tasks import Classification

    class Both(Classification):
        def forward(self, model, batch):
            x, y = batch
            return model(x), y

        def loss(self, outputs, targets, weights=None):
            return super().loss(outputs[0], targets) + super().loss(outputs[1], targets)

        def counts(self, outputs, targets):
            return super().counts(outputs[0], targets)

    metrics = trainer.fit(FIT, model=Model("tuple"), data=(Items(), Items(n=32)), task=Both(),
                          run_dir=tmp_path)
    assert metrics["steps"] == 4


def _framed(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines()
            if not line.startswith(("[", "recipe:", "data:", "run directory:", "step "))]


def test_the_users_own_exception_is_framed_with_their_frames_only(tmp_path):
    model = ["model._target_=tests.helpers.broken.Model", "+model.kind=raises", "~model.hidden",
             "~model.dropout", "~model.norm"]
    done = cli_in_process(*model, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert done.returncode == 1
    lines = _framed(done.stderr)
    assert lines[0] == ("trainer: error: your code raised ValueError in training step 1 "
                        "(epoch 0, batch 0) on rank 0, no checkpoint was written yet")
    assert lines[1] == "Traceback of your code (TRAINER_FULL_ERROR=1 shows every frame):"
    assert "tests/helpers/broken.py\", line " in lines[2] and lines[2].endswith(", in forward")
    assert lines[-1] == "ValueError: the user's own forward failed"
    assert len(lines) == 5  # no frame of Hydra, the framework or torch


def test_a_constructors_exception_names_what_was_being_built(tmp_path):
    model = ["model._target_=tests.helpers.broken.Model", "+model.kind=constructor",
             "~model.hidden", "~model.dropout", "~model.norm"]
    done = cli_in_process(*model, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert done.returncode == 1
    lines = _framed(done.stderr)
    assert lines[0] == ("trainer: error: your code raised RuntimeError building model "
                        "(tests.helpers.broken.Model)")
    assert lines[-1] == "RuntimeError: the user's own __init__ failed" and len(lines) == 5


def test_a_callbacks_exception_names_its_hook_and_the_checkpoint_it_left(tmp_path):
    done = cli_in_process("+callbacks.bad._target_=tests.helpers.broken.RaisingCallback",
                          "trainer.checkpoint_every=2", f"hydra.run.dir={tmp_path}/run",
                          cwd=tmp_path)
    assert done.returncode == 1
    checkpoint = tmp_path / "run" / "checkpoints" / "step-00000002.pt"
    assert _framed(done.stderr)[0] == (
        "trainer: error: your code raised RuntimeError in the callback bad.on_step_end, after "
        f"step 3 on rank 0, the last checkpoint is {checkpoint} (trainer.resume=auto continues "
        "from it)")
    assert checkpoint.is_file()
    full = cli_in_process("+callbacks.bad._target_=tests.helpers.broken.RaisingCallback",
                          "trainer.resume=null", f"hydra.run.dir={tmp_path}/full", cwd=tmp_path,
                          env={"TRAINER_FULL_ERROR": "1"})
    assert "trainer/engine/loop.py" in full.stderr  # every frame, on request


def test_a_datasets_own_exception_names_the_item(tmp_path):
    with pytest.raises(KeyError) as caught:
        trainer.fit(FIT, model=Model(), data=(Items("raises"), Items(n=32)), run_dir=tmp_path)
    assert caught.value.trainer_where[0] == "in the training Dataset (Items).__getitem__(5)"
    assert "(trainer: in the training Dataset (Items).__getitem__(5))" in caught.value.__notes__
