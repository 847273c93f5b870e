"""Bad input: one line naming the problem and the fix, exit code 2, nothing saved is lost.

The CLI runs in this process (tests.helpers.cli_in_process): what is tested is its line and what
it wrote or kept; tests/config/test_bad_input_table.py also runs rows as new processes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.helpers import cli_in_process
from tests.helpers.errors import one_line_error
from trainer.errors import UserError
from trainer.io.checkpoint_read import read_checkpoint


@pytest.mark.parametrize(
    "args,needles",
    [
        (["recipe=nope"], ["unknown recipe 'nope'", "digits", "mnist"]),
        (["optimizer=sgdw"], ["unknown optimizer 'sgdw'", "adam", "lamb", "lars", "sgd"]),
        (["data.batch_size=0"], ["data.batch_size=0", "positive"]),
        (["data.batch_size=-5"], ["data.batch_size=-5", "positive"]),
        (["data.batch_size=100000"], ["data.batch_size=100000", "larger than the 1294",
                                     "data.val_fraction=0.1 held 144 rows out"]),
        (["optimizer.lr=0"], ["optimizer.lr=0", "> 0"]),
        (["optimizer.lr=-0.1"], ["optimizer.lr=-0.1", "> 0"]),
        (["trainer.keep_last=0"], ["trainer.keep_last=0"]),
        (["optimizer.momentum=0", "optimizer.nesterov=true"], ["Nesterov", "momentum > 0"]),
        (["model._target_=os.system"], ["model._target_=os.system is refused"]),
        (["dist.backend=gloo"], ["dist.backend=gloo is invalid", "auto"]),
        (["trainer.dtype=float16"], ["trainer.dtype=float16", "float32 or float64"]),
        (["trainer.dtype=float64", "trainer.precision=bf16"],
         ["trainer.precision=bf16", "trainer.dtype=float64", "trainer.precision=32"]),
        (["trainer.dropout_masks=shared"], ["trainer.dropout_masks=shared", "per_sample"]),
        # The example: 65 = 4 x 16 + 1 ended in a raw torch traceback.
        (["model.norm=batch", "model.ghost_batch_size=16", "data.batch_size=65"],
         ["model.ghost_batch_size=16 does not divide the per-worker micro-batch of 65"]),
        (["model.norm=batch", "model.ghost_batch_size=16", "data.batch_size=64",
          "trainer.accumulate=8"],
         ["model.ghost_batch_size=16 does not divide the per-worker micro-batch of 8"]),
    ],
)
def test_bad_values_fail_fast_with_one_line(tmp_path, args, needles):
    result = cli_in_process(*args, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    one_line_error(result, *needles)
    assert not (tmp_path / "run" / "checkpoints").exists() or not any(
        (tmp_path / "run" / "checkpoints").iterdir()
    )


def test_missing_data_directory_says_which_files_go_where(tmp_path):
    missing = tmp_path / "nowhere"
    result = cli_in_process(
        "recipe=mnist",
        f"data.root={missing}",
        "data.download=false",
        f"hydra.run.dir={tmp_path}/run",
        cwd=tmp_path,
    )
    one_line_error(
        result, f"MNIST not found in {missing}", "train-images-idx3-ubyte.gz", "TRAINER_DATA_DIR"
    )


def test_unreadable_checkpoint(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"\x00" * 64)
    result = cli_in_process(f"trainer.resume={bad}", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    one_line_error(result, str(bad), "trainer.resume=null")


def test_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = cli_in_process(f"hydra.run.dir={blocker}/run", cwd=tmp_path)
    one_line_error(result, "hydra.run.dir", "is a file, not a directory")


def test_checkpoint_folder_that_cannot_be_created(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoints").write_text("in the way")
    result = cli_in_process(f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    one_line_error(result, "cannot write checkpoints", "hydra.run.dir")


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("step-*.pt")}


def test_nan_loss_stops_naming_the_step_and_keeps_good_checkpoints(tmp_path):
    run_dir = tmp_path / "run"
    ok = cli_in_process(
        "trainer.max_steps=6",
        "trainer.checkpoint_every=2",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    before = _digests(run_dir / "checkpoints")

    # Resume the same run with a learning rate that blows up: the error names the step, and
    # the checkpoints written before it are still there, unchanged, and load.
    result = cli_in_process(
        "trainer.max_steps=60",
        "trainer.checkpoint_every=1",
        "optimizer.lr=1e5",
        "trainer.log_every=1000",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    line = one_line_error(result, "at step", "optimizer.lr")
    bad_step = int(line.split("at step ")[1].split(";")[0])
    assert bad_step > 6
    after = _digests(run_dir / "checkpoints")
    for name in set(before) & set(after):
        assert before[name] == after[name]
    for path in (run_dir / "checkpoints").glob("step-*.pt"):
        assert int(path.stem.split("-")[1]) < bad_step
        read_checkpoint(path)  # every file left is loadable and finite
    assert (run_dir / "checkpoints" / "last.pt").resolve().exists()
    assert not (run_dir / "metrics.json").read_text().count("NaN")


def test_failed_resume_leaves_the_run_directory_untouched(tmp_path):
    run_dir = tmp_path / "run"
    first = cli_in_process("trainer.max_steps=4", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert first.returncode == 0
    before = _digests(run_dir / "checkpoints")
    result = cli_in_process("model.hidden=[32]", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    one_line_error(result, "does not fit this model", str(run_dir))
    assert _digests(run_dir / "checkpoints") == before


def test_a_sweeps_unknown_option_fails_before_its_first_job(tmp_path):
    # A single run finds an unknown option when Hydra fails on it; a sweep checks every
    # listed option first, so the good one does not train before the bad one is named.
    result = cli_in_process("-m", "recipe=mnist,nope", f"hydra.sweep.dir={tmp_path}/sweep",
                     cwd=tmp_path)
    one_line_error(result, "unknown recipe 'nope'", "mnist")
    assert not [p for p in (tmp_path / "sweep").glob("*") if p.is_dir()]


def test_a_sweep_job_with_bad_input_fails_alone_and_the_sweep_names_it(tmp_path):
    """``trainer -m data.batch_size=32,0,64``: the job with 0 fails in one line naming its
    folder; the job with 64 still runs (it never ran, without a word); exit 2 names the
    failed job, and trainer-report marks it in its table."""
    from trainer.tools.report import write_report

    sweep = tmp_path / "sweep"
    result = cli_in_process("-m", "data.batch_size=32,0,64", "trainer.max_steps=2",
                            f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("trainer")]
    assert lines == [
        "trainer: error: job 1_data.batch_size=0: data.batch_size=0 is invalid: use a positive "
        "integer, or auto",
        "trainer: error: 1 of the sweep's 3 jobs failed (job 1_data.batch_size=0; each one's "
        "reason is above and in its folder's failed.txt); the others ran to the end",
    ]
    assert (sweep / "2_data.batch_size=64" / "metrics.json").is_file()
    assert (sweep / "1_data.batch_size=0" / "failed.txt").read_text() == \
        "data.batch_size=0 is invalid: use a positive integer, or auto\n"
    report = write_report(sweep)[0].read_text()
    assert "| 0 | failed |" in report and "| 64 |" in report


@pytest.mark.parametrize("kwargs,line", [
    ({"callbacks": "cb"}, "trainer.fit(callbacks=...) takes a list of callbacks, not a str; for "
                          "one: callbacks=[your_callback]"),
    ({"transforms": 5}, "trainer.fit(transforms=...) takes a list of transforms, not a int"),
    ({"run_dir": 123}, "trainer.fit(run_dir=...) takes a folder's path (str or pathlib.Path), "
                       "not a int"),
    ({"overrides": 5}, "trainer.fit(overrides=...) takes a list of 'KEY=VALUE' strings (or a "
                       "composed config), not a int"),
    ({"model": "mlp"}, "trainer.fit(model=...) takes a torch.nn.Module, not a str"),
    ({"task": 3}, "trainer.fit(task=...) takes a task object with loss(outputs, targets)"),
    ({"overrides": ["trainer.epochz=3"]}, "trainer.epochz is not a key of the trainer group; "
                                          "did you mean trainer.epochs? `trainer --cfg job`"),
])
def test_trainer_fit_checks_its_arguments_in_one_line(tmp_path, kwargs, line):
    """What the CLI says of a key, trainer.fit says too; a wrong kind of argument is named
    before anything is built."""
    import trainer

    kwargs = {"overrides": ["trainer.max_steps=1"], "run_dir": tmp_path, **kwargs}
    with pytest.raises(UserError) as caught:
        trainer.fit(kwargs.pop("overrides"), **kwargs)
    assert str(caught.value).startswith(line)
    assert not list(tmp_path.glob("checkpoints/*"))
