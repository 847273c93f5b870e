"""Batch-size sweeps: a real Hydra multirun, then trainer-report's table and plot."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import run_cli


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
    assert report.returncode != 0
    assert "no metrics.json under" in report.stderr and "multirun directory" in report.stderr


def test_time_to_target_reads_the_first_evaluation_that_reached_it():
    from trainer.tools.report import Job, time_to_target

    history = [{"eval/accuracy": a, "train_time_s": t} for a, t in
               ((0.90, 1.0), (0.97, 2.5), (0.96, 3.0), (0.98, 4.0))]
    job = Job("j", 128, {"history": history})
    assert time_to_target(job, "eval/accuracy", 0.97) == 2.5
    assert time_to_target(job, "eval/accuracy", 0.99) is None


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
    rows = [line.split("|") for line in text.splitlines() if line.startswith("| 64 ")]
    assert rows[0][8].strip() == "not measured"
    assert png.read_bytes()[:4] == b"\x89PNG"
