"""Batch-size sweeps: a real Hydra multirun, then trainer-report's table and plot."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import run_cli, train_in_process


def test_sweep_config_runs_a_multirun_and_the_report_tabulates_it(tmp_path):
    sweep = tmp_path / "sweep"
    # The ready linreg study, cut to two batch sizes (command-line values win over the
    # config's sweeper params) and 20 steps, while the gradient still stands out of the noise
    # (converged runs end with B_simple not measurable); the sweep picks its recipe, so recipe
    # keys can be set.
    result = run_cli("sweep=linreg_batch", "data.batch_size=32,8192", "data.noise_std=1.0",
                     "trainer.max_steps=20", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = {p.parent.name: json.loads(p.read_text()) for p in sweep.rglob("metrics.json")}
    assert sorted(jobs) == ["batch_32", "batch_8192"]
    assert all(m["b_simple"] > 0 for m in jobs.values())  # noise_scale=always in the sweep

    report = subprocess.run([sys.executable, "-m", "trainer.tools.report", str(sweep)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    table = (sweep / "report.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| 32 ")
            or line.startswith("| 8192 ")]
    assert len(rows) == 2 and table.index("| 32 ") < table.index("| 8192 ")
    full = rows[1].split("|")
    assert float(full[2]) == round(jobs["batch_8192"]["test_loss"], 4)  # test loss column
    b_simple, se = jobs["batch_8192"]["b_simple"], jobs["batch_8192"]["b_simple_stderr"]
    assert full[8].strip() == f"{b_simple:,.0f} ± {se:,.0f}"  # B_simple column
    assert "time to" in table and table in report.stdout
    png = (sweep / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_report_names_the_problem_for_a_folder_without_runs(tmp_path):
    report = subprocess.run([sys.executable, "-m", "trainer.tools.report", str(tmp_path)],
                            capture_output=True, text=True)
    assert report.returncode == 2 and report.stderr.count("\n") == 1
    assert "no metrics.json under" in report.stderr and "multirun directory" in report.stderr


def test_time_to_target_reads_the_first_evaluation_that_reached_it():
    from trainer.tools.report import Job, Metric, time_to_target

    for split in ("val", "eval"):  # (eval/: a run from before validation splits)
        history = [{f"{split}/accuracy": a, "train_time_s": t} for a, t in
                   ((0.90, 1.0), (0.97, 2.5), (0.96, 3.0), (0.98, 4.0))]
        job = Job("j", 128, {"history": history, "test_accuracy": 0.995})
        assert time_to_target(job, Metric("accuracy"), 0.97) == 2.5
        # The test split is the table's last column, never a target reached.
        assert time_to_target(job, Metric("accuracy"), 0.99) is None


def test_an_empty_b_simple_column_says_why(tmp_path):
    from trainer.tools.report import write_report

    note = ("not measured: trainer.noise_scale=auto measures B_simple only where it is free "
            "(trainer.accumulate >= 2); set trainer.noise_scale=always to measure it")
    for batch in (64, 512):
        job = tmp_path / f"batch_{batch}"
        job.mkdir()
        (job / "metrics.json").write_text(json.dumps({
            "global_batch_size": batch, "test_accuracy": 0.9, "test_loss": 0.3, "steps": 10,
            "b_simple": None, "b_simple_stderr": None, "b_simple_note": note, "history": [],
        }))
    md, png = write_report(tmp_path)
    text = md.read_text()
    assert f"B_simple: {note}." in text
    assert "No job evaluated val/accuracy during training" in text
    rows = [line.split("|") for line in text.splitlines() if line.startswith("| 64 ")]
    assert rows[0][8].strip() == "not measured"
    assert png.read_bytes()[:4] == b"\x89PNG"


def _jobs(folder, *specs):
    """metrics.json files: (batch, accuracies at the evaluations, B_simple, its steps)."""
    for batch, accuracies, b_simple, steps in specs:
        job = folder / f"batch_{batch}"
        job.mkdir()
        history = [{"val/accuracy": a, "train_time_s": float(i + 1)}
                   for i, a in enumerate(accuracies)]
        (job / "metrics.json").write_text(json.dumps({
            "global_batch_size": batch, "test_accuracy": accuracies[-1] + 0.02, "test_loss": 0.3,
            "steps": 100, "samples_per_sec": 1000.0, "b_simple": b_simple,
            "b_simple_stderr": 10.0 if b_simple else None, "b_simple_steps": steps,
            "b_simple_note": None, "history": history}))


def test_the_default_target_is_reached_by_every_job_and_a_set_one_names_who_missed(tmp_path):
    from trainer.tools.report import write_report

    # The small batch peaks at 0.95 then dips; the large one only reaches 0.93.
    _jobs(tmp_path, (64, [0.90, 0.95, 0.94], 500.0, 300), (4096, [0.80, 0.93], 900.0, 28))
    md, _ = write_report(tmp_path)
    text = md.read_text()
    # Read on the validation split: the test accuracies (0.02 higher) do not move it.
    assert "Target: val/accuracy >= 0.93 (the best every job reached)" in text
    assert "Never reached" not in text
    rows = {line.split("|")[1].strip(): line.split("|") for line in text.splitlines()
            if line.startswith("| 64 ") or line.startswith("| 4096 ")}
    assert rows["64"][6].strip() == "2" and rows["4096"][6].strip() == "2"  # time to target
    # B_simple from 28 steps is flagged; the 300-step one is not.
    assert "fewer than 100 measured steps in batch_4096 (28 steps)" in text
    md, _ = write_report(tmp_path, target=0.945)
    assert "Never reached the target: batch_4096." in md.read_text()


def test_adascale_jobs_get_their_mean_gain_column(tmp_path):
    from trainer.tools.report import write_report

    _jobs(tmp_path, (128, [0.9], 500.0, 300), (1024, [0.9], 500.0, 300))
    assert "AdaScale gain" not in write_report(tmp_path)[0].read_text()
    metrics = json.loads((tmp_path / "batch_1024" / "metrics.json").read_text())
    (tmp_path / "batch_1024" / "metrics.json").write_text(
        json.dumps({**metrics, "adascale_mean_gain": 2.537}))
    text = write_report(tmp_path)[0].read_text()
    rows = {line.split("|")[1].strip(): line.split("|") for line in text.splitlines()
            if line.startswith(("| 128 ", "| 1024 ", "| global"))}
    assert rows["global batch"][9].strip() == "AdaScale gain"
    assert rows["1024"][9].strip() == "2.54" and rows["128"][9].strip() == "—"


def test_sweep_job_folders_are_named_by_the_swept_keys_only(tmp_path):
    from trainer.config import swept_dirname

    argv = ["-m", "data.batch_size=32,64", f"data.root={tmp_path}/data", "optimizer.lr=0.1"]
    task = ["data.batch_size=32", f"data.root={tmp_path}/data", "optimizer.lr=0.1"]
    assert swept_dirname(task, argv) == "data.batch_size=32"
    assert swept_dirname(["optimizer=sgd"], ["optimizer=choice(sgd,adam)"]) == "optimizer=sgd"
    assert swept_dirname([], []) == "job"
    # A real multirun: a fixed data.root no longer becomes part of the folder names.
    result = run_cli("-m", "data.batch_size=32,64", "data.root=sklearn-bundled",
                     "trainer.max_steps=2", "logger.sample_predictions=0",
                     f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir()) == [
        "0_data.batch_size=32", "1_data.batch_size=64"]


def test_the_metric_is_the_one_the_runs_watched_or_named_and_unfinished_jobs_are_said(tmp_path):
    """A recipe's own metric (its early stopping's monitor, in each job's config.yaml) is the
    report's, lower-is-better where its mode says min; --metric names any other; a job that
    started without finishing is named, not dropped without a word."""
    from trainer.tools.report import write_report

    for batch, f1s in ((64, [0.5, 0.7]), (512, [0.4, 0.6])):
        job = tmp_path / f"batch_{batch}"
        (job / ".hydra").mkdir(parents=True)
        (job / "config.yaml").write_text(
            "callbacks:\n  early_stopping: {monitor: eval/macro_f1, mode: max}\n"
            "  best_checkpoint: {monitor: eval/macro_f1, mode: max}\n")
        history = [{"eval/macro_f1": f, "eval/loss": 1 - f, "train_time_s": float(i + 1)}
                   for i, f in enumerate(f1s)]
        (job / "metrics.json").write_text(json.dumps({
            "global_batch_size": batch, "test_accuracy": 0.9, "test_loss": 1 - f1s[-1],
            "test_macro_f1": f1s[-1], "steps": 10, "history": history}))
    (tmp_path / "batch_4096" / ".hydra").mkdir(parents=True)  # killed before metrics.json
    failed = tmp_path / "batch_0"  # failed on its input: `trainer -m` wrote its failed.txt
    (failed / ".hydra").mkdir(parents=True)
    (failed / ".hydra" / "config.yaml").write_text("data:\n  batch_size: 0\n")
    (failed / "failed.txt").write_text("data.batch_size=0 is invalid: use a positive integer\n")
    text = write_report(tmp_path)[0].read_text()
    assert "| global batch | test macro_f1 |" in text
    # A sweep from before validation splits (eval/ histories) still reports.
    assert "Target: val/macro_f1 >= 0.6 (the best every job reached)" in text
    assert "Started but wrote no metrics.json (still running, or stopped; not in the table): " \
        "batch_4096." in text
    assert "| 0 | failed | — | — | — | — | — | — | batch_0: data.batch_size=0 is invalid: use " \
        "a positive integer |" in text
    text = write_report(tmp_path, metric_name="loss")[0].read_text()
    assert "Target: val/loss <= 0.4 (the best every job reached)" in text
    report = subprocess.run([sys.executable, "-m", "trainer.tools.report", str(tmp_path),
                             "--metric", "f2"], capture_output=True, text=True)
    assert report.returncode == 2 and report.stderr == (
        "trainer-report: error: --metric f2: no job has test_f2; the runs' metrics are "
        "accuracy, loss, macro_f1\n")


def test_an_adaptive_run_is_shown_over_training_beside_the_fixed_batch_runs(tmp_path):
    """data.batch_size=auto beside a fixed batch in one folder: its row says auto, its
    decision points (batch, B_simple, AdaScale's gain, lr, predicted goodput) and changes
    are tabulated, and report_adaptive.png puts its curve next to the fixed run's."""
    from tests.callbacks.test_adaptive_batch import AUTO
    from trainer.tools.report import write_report

    auto = train_in_process(tmp_path / "auto", *AUTO)
    fixed = train_in_process(tmp_path / "fixed_32", *AUTO[4:], "data.batch_size=32")
    assert "batch_trace" not in fixed
    md, _ = write_report(tmp_path)
    text = md.read_text()
    assert "| 32 (auto) |" in text and "| 32 |" in text  # both rows, the controller's named
    assert "## Adaptive batch: auto" in text
    header = next(line for line in text.splitlines() if line.startswith("| step | samples"))
    assert "B_simple | AdaScale gain | lr | predicted goodput" in header
    rows = text.split(header)[1].split("\n\n")[0].strip().splitlines()[1:]
    trace = auto["batch_trace"]
    assert len(rows) == len(trace)
    assert rows[0].startswith(f"| {trace[0]['step']} | {trace[0]['samples']:,} | "
                              f"{trace[0]['batch']} | {trace[0]['b_simple']:,.0f} |")
    assert "32 -> 90: profile" in text  # the plan's changes with their reasons
    for name in ("report.png", "report_adaptive.png"):
        png = (tmp_path / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
