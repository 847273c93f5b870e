"""``trainer-report DIR``: the batch-size study of a Hydra multirun, as a table and a plot.

Reads every job under DIR (each job folder holds the ``metrics.json`` a run writes, with its
global batch and per-evaluation history) and writes into DIR:

- ``report.md``: one row per job, sorted by global batch size: final test metric, steps,
  training time, time to the target, samples/s and the measured gradient noise scale B_simple;
- ``report.png``: the same four quantities against the batch size (log scale);
- runs with ``data.batch_size=auto`` ("(auto)" rows): their decisions over training and
  ``report_adaptive.png`` (trainer/tools/report_adaptive.py).

The metric is ``--metric NAME`` (any metric of the runs' task: ``accuracy``, ``loss``,
``macro_f1``...; higher is better unless ``--mode min``, or the name is a loss or an error),
by default the one the runs' early stopping (else their best checkpoint) watched, as their
config.yaml says, else accuracy, else the loss. Targets are read on the validation split (the
evaluations during training); the test split is only the final column. The target defaults to
the best value that EVERY job reached at some evaluation (the worst of the jobs' bests), so each
batch size has a time to it and "time to target" asks how fast each one gets there.
``--target`` sets it explicitly; the report then names the jobs that never reached it. Jobs that
started (Hydra's ``.hydra`` folder) but wrote no metrics.json (still running, or stopped) are
named; jobs that failed on their input (``trainer -m`` wrote their ``failed.txt``) are rows of
the table, with the reason.
B_simple is shown with its standard error, and flagged where it rests on fewer than
``FEW_STEPS`` measured steps (a short job: its estimate is rough).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from trainer.tools import report_adaptive
from trainer.tools.report_adaptive import is_adaptive


@dataclass
class Job:
    name: str  # the job folder, relative to DIR
    batch: int
    metrics: dict


@dataclass(frozen=True)
class Metric:
    """An evaluation metric of the runs' task: ``val/<name>`` in each evaluation of the
    history (``eval/<name>`` in a run from before validation splits, whose evaluations were
    the test split's), ``test_<name>`` in metrics.json."""

    name: str
    higher: bool = True

    def at(self, evaluation: dict) -> float | None:
        """Its value in one evaluation of a history, or None."""
        found = evaluation.get(f"val/{self.name}")
        return found if found is not None else evaluation.get(f"eval/{self.name}")

    @property
    def percent(self) -> bool:
        return self.name == "accuracy"

    def reached(self, value: float, target: float) -> bool:
        return value >= target if self.higher else value <= target

    def best(self, values: list[float]) -> float:
        return max(values) if self.higher else min(values)

    def worst(self, values: list[float]) -> float:
        return min(values) if self.higher else max(values)


# Names whose lower values are better, when no --mode and no run's config says.
_LOWER = ("loss", "perplexity", "error", "mse", "mae", "rmse")


def fail(message: str) -> None:
    """One line and exit 2, as every command of the trainer."""
    sys.stderr.write(f"trainer-report: error: {message}\n")
    raise SystemExit(2)


def load_jobs(root: Path) -> list[Job]:
    """Every finished job under ``root`` (a folder with a metrics.json), by batch size."""
    jobs = []
    for path in sorted(root.rglob("metrics.json")):
        folder = path.parent
        metrics = json.loads(path.read_text())
        jobs.append(Job(str(folder.relative_to(root)) or ".", int(metrics["global_batch_size"]),
                        metrics))
    return sorted(jobs, key=lambda j: (j.batch, j.name))


def unfinished_jobs(root: Path) -> list[str]:
    """Job folders that Hydra started (their ``.hydra``) without a metrics.json, and without
    a failed.txt (those are :func:`failed_jobs`)."""
    return sorted(str(p.parent.relative_to(root)) or "." for p in root.rglob(".hydra")
                  if p.is_dir() and not (p.parent / "metrics.json").exists()
                  and not (p.parent / "failed.txt").exists())


@dataclass
class FailedJob:
    name: str  # the job folder, relative to DIR
    batch: str  # its data.batch_size, as configured ("?" where unknown)
    reason: str  # the one line the job failed with (its failed.txt)


def failed_jobs(root: Path) -> list[FailedJob]:
    """Jobs of a sweep that failed on their input (``trainer -m`` wrote their failed.txt)."""
    failed = []
    for path in sorted(root.rglob("failed.txt")):
        folder = path.parent
        if (folder / "metrics.json").exists():
            continue  # run again since, and finished
        batch = "?"
        if (config := folder / ".hydra" / "config.yaml").is_file():
            from omegaconf import OmegaConf

            try:
                batch = str(OmegaConf.select(OmegaConf.load(config), "data.batch_size"))
            except Exception:  # noqa: BLE001 (an unreadable record: the batch stays unknown)
                pass
        reason = path.read_text(errors="replace").strip().replace("|", "\\|")
        failed.append(FailedJob(str(folder.relative_to(root)) or ".", batch, reason))
    return failed


def _watched(root: Path, job: Job) -> tuple[str, str] | None:
    """(monitor, mode) of the job's early stopping, else of its best checkpoint."""
    from omegaconf import OmegaConf

    path = root / job.name / "config.yaml"
    if not path.is_file():
        return None
    callbacks = OmegaConf.to_container(OmegaConf.load(path), resolve=True).get("callbacks") \
        or {}
    for name in ("early_stopping", "best_checkpoint"):
        node = callbacks.get(name)
        if isinstance(node, dict) and node.get("monitor"):
            return str(node["monitor"]), str(node.get("mode", "max"))
    return None


def choose_metric(root: Path, jobs: list[Job], name: str | None = None,
                  mode: str | None = None) -> Metric:
    """``name`` (``accuracy``, ``val/accuracy`` or ``test_accuracy``), else what the runs
    watched, else accuracy, else loss; the direction from ``mode``, the runs' config or the
    name."""
    available = sorted({k[5:] for j in jobs for k, v in j.metrics.items()
                        if k.startswith("test_") and isinstance(v, int | float)})
    watched = {w for j in jobs if (w := _watched(root, j)) is not None}
    if name is None:
        monitors = [(_bare(m), d) for m, d in watched]
        if len(monitors) == 1 and all(j.metrics.get(f"test_{monitors[0][0]}") is not None
                                      for j in jobs):
            name, mode = monitors[0][0], mode or monitors[0][1]
        else:
            name = "accuracy" if all(j.metrics.get("test_accuracy") is not None
                                     for j in jobs) else "loss"
    name = _bare(name).removeprefix("test_")
    if name not in available:
        fail(f"--metric {name}: no job has test_{name}; the runs' metrics are "
             f"{', '.join(available) or 'none'}")
    if mode is None:
        said = {d for m, d in watched if _bare(m) == name}
        mode = said.pop() if len(said) == 1 else (
            "min" if name.endswith(_LOWER) else "max")
    return Metric(name, higher=mode == "max")


def _bare(metric: str) -> str:
    """A monitored metric's name without its split (``val/accuracy``, and a run from before
    validation splits' ``eval/accuracy``: ``accuracy``)."""
    return metric.removeprefix("val/").removeprefix("eval/")


def final_value(job: Job, metric: Metric) -> float | None:
    return job.metrics.get(f"test_{metric.name}")


FEW_STEPS = 100  # B_simple from fewer measured steps than this is flagged as rough


def best_reached(job: Job, metric: Metric) -> float | None:
    """The best value of ``metric`` at any evaluation of the job during training (the
    validation split's; the test split is the table's final column, never a target)."""
    values = [v for e in job.metrics.get("history", []) if (v := metric.at(e)) is not None]
    return metric.best(values) if values else None


def default_target(jobs: list[Job], metric: Metric) -> float:
    """The best value every job reached: the worst of the jobs' bests (NaN where no job
    evaluated it during training: runs without a validation split have no time to target)."""
    bests = [v for j in jobs if (v := best_reached(j, metric)) is not None]
    return metric.worst(bests) if bests else math.nan


def missed_target(jobs: list[Job], metric: Metric, target: float) -> list[str]:
    """The jobs whose evaluations never reached ``target``."""
    return [j.name for j in jobs if time_to_target(j, metric, target) is None]


def rough_b_simple(jobs: list[Job]) -> list[str]:
    """Jobs whose B_simple rests on fewer than FEW_STEPS measured steps."""
    return [f"{j.name} ({j.metrics['b_simple_steps']} steps)" for j in jobs
            if j.metrics.get("b_simple") is not None
            and j.metrics.get("b_simple_steps") is not None
            and j.metrics["b_simple_steps"] < FEW_STEPS]


def time_to_target(job: Job, metric: Metric, target: float) -> float | None:
    """Training seconds at the first evaluation that reached ``target``, or None."""
    for entry in job.metrics.get("history", []):
        value = metric.at(entry)
        if value is not None and metric.reached(value, target):
            return float(entry["train_time_s"])
    return None


def _fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, spec)


def _target_text(target: float, metric: Metric) -> str:
    return f"{100 * target:.2f}%" if metric.percent else f"{metric.name} {target:.4g}"


def _heading(metric: Metric) -> str:
    return "test accuracy (%)" if metric.percent else f"test {metric.name}"


def b_simple_text(job: Job) -> str:
    """The B_simple cell: the value with its standard error, or why there is none."""
    m = job.metrics
    if m.get("b_simple") is not None:
        se = m.get("b_simple_stderr")
        return f"{m['b_simple']:,.0f}" + (f" ± {se:,.0f}" if se is not None else "")
    note = m.get("b_simple_note") or ""
    return "not measured" if note.startswith("not measured") else (
        "not measurable" if note else "—")


def b_simple_empty_reason(jobs: list[Job]) -> str | None:
    """Why no job has a B_simple (None when some job has one)."""
    if any(j.metrics.get("b_simple") is not None for j in jobs):
        return None
    notes = sorted({j.metrics.get("b_simple_note") or "no B_simple recorded" for j in jobs})
    return notes[0] if len(notes) == 1 else "; ".join(notes[:3])


def table(jobs: list[Job], metric: Metric, target: float,
          failed: list[FailedJob] = ()) -> str:
    accuracy = metric.percent
    head = _heading(metric)
    target_text = _target_text(target, metric)
    # AdaScale's mean gain, where a job ran with it (optimizer.scale_lr=adascale).
    gains = any(j.metrics.get("adascale_mean_gain") is not None for j in jobs)
    lines = [
        f"| global batch | {head} | epochs | steps | train time (s) | time to {target_text} (s) "
        "| samples/s | B_simple |" + (" AdaScale gain |" if gains else "") + " job |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if gains else "") + "---|",
    ]
    for j in jobs:
        m = j.metrics
        value = final_value(j, metric)
        shown = 100 * value if (accuracy and value is not None) else value
        lines.append(
            f"| {j.batch}{' (auto)' if is_adaptive(j) else ''} | "
            f"{_fmt(shown, '.2f' if accuracy else '.4f')} | "
            f"{_fmt(m.get('epochs'), '.1f')} | {m.get('steps', '—')} | "
            f"{_fmt(m.get('train_time_s'), '.3g')} | "
            f"{_fmt(time_to_target(j, metric, target), '.3g')} | "
            f"{_fmt(m.get('samples_per_sec'), ',.0f')} | {b_simple_text(j)} | "
            + (f"{_fmt(m.get('adascale_mean_gain'), '.2f')} | " if gains else "")
            + f"{j.name} |"
        )
    for f in failed:
        lines.append(f"| {f.batch} | failed | — | — | — | — | — | — | "
                     + ("— | " if gains else "") + f"{f.name}: {f.reason} |")
    return "\n".join(lines) + "\n"


def plot(jobs: list[Job], metric: Metric, target: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on cluster nodes
    import matplotlib.pyplot as plt

    accuracy = metric.percent
    batches = [j.batch for j in jobs]
    panels = [
        (_heading(metric),
         [(100 * v if accuracy else v) if (v := final_value(j, metric)) is not None else None
          for j in jobs]),
        (f"time to {_target_text(target, metric)} (s)",
         [time_to_target(j, metric, target) for j in jobs]),
        ("samples/s", [j.metrics.get("samples_per_sec") for j in jobs]),
        ("B_simple (critical batch)", [j.metrics.get("b_simple") for j in jobs]),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (label, values) in zip(axes.flat, panels, strict=True):
        points = [(b, v) for b, v in zip(batches, values, strict=True) if v is not None]
        if points and label.startswith("B_simple"):
            errors = [j.metrics.get("b_simple_stderr") or 0 for j in jobs
                      if j.metrics.get("b_simple") is not None]
            ax.errorbar(*zip(*points, strict=True), yerr=errors, marker="o", capsize=3)
        elif points:
            ax.plot(*zip(*points, strict=True), marker="o")
        if label.startswith(("samples/s", "time to")) and points:
            ax.set_ylim(bottom=0)  # rates and times from zero: ratios read off the plot
        if label.startswith("B_simple") and points:
            # Where the batch equals the estimate: batches right of the crossing are past it.
            ax.plot(batches, batches, linestyle="--", color="gray", label="batch size")
            ax.legend()
            ax.set_yscale("log")
        elif label.startswith("B_simple"):
            ax.text(0.5, 0.5, textwrap.fill(b_simple_empty_reason(jobs), 48), ha="center",
                    va="center", transform=ax.transAxes, fontsize=8, color="dimgray")
        ax.set_xscale("log", base=2)
        ax.set_xlim(min(batches) / 1.4, max(batches) * 1.4)  # the same x-axis in every panel
        ax.set_xlabel("global batch size")
        ax.set_title(label)
        ax.grid(True, alpha=0.3)
    fig.suptitle("batch-size sweep")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def write_report(root: Path, target: float | None = None, metric_name: str | None = None,
                 mode: str | None = None) -> tuple[Path, Path]:
    """Write report.md and report.png into ``root``; returns their paths."""
    jobs = load_jobs(root)
    if not jobs and (failed := failed_jobs(root)):
        fail(f"every job under {root} failed ({failed[0].name}: {failed[0].reason}"
             f"{f'; and {len(failed) - 1} more' if len(failed) > 1 else ''}); fix the input "
             "and run the sweep again")
    if not jobs:
        fail(f"no metrics.json under {root}; point it at a multirun directory whose jobs "
             "have finished (e.g. multirun/mnist/2026-01-01_12-00-00)")
    metric = choose_metric(root, jobs, metric_name, mode)
    default = target is None
    target = default_target(jobs, metric) if default else target
    md, png = root / "report.md", root / "report.png"
    fixed = [j for j in jobs if not is_adaptive(j)]  # (by batch size: the sweep's plot)
    adaptive, adaptive_png = report_adaptive.section(root, jobs), root / report_adaptive.PLOT
    md.write_text(
        f"# Batch-size sweep: {root}\n\n{table(jobs, metric, target, failed_jobs(root))}\n"
        + (f"No job evaluated val/{metric.name} during training (no validation split: "
           "data.val_fraction=0), so there is no time to a target.\n\n" if math.isnan(target)
           else f"Target: val/{metric.name} {'>=' if metric.higher else '<='} {target:.4g}"
           + (" (the best every job reached)" if default else "")
           + "; times are training seconds (evaluation and checkpoints excluded), read at "
           "the evaluations on the validation split; the final column is the test split, "
           "read once at the end.\n\n")
        + (f"Never reached the target: {', '.join(missed)}.\n\n"
           if not math.isnan(target) and (missed := missed_target(jobs, metric, target))
           else "")
        + (f"Started but wrote no metrics.json (still running, or stopped; not in the table): "
           f"{', '.join(unfinished)}.\n\n" if (unfinished := unfinished_jobs(root)) else "")
        + (f"B_simple: {why}.\n\n" if (why := b_simple_empty_reason(jobs)) else "")
        + (f"Warning: B_simple rests on fewer than {FEW_STEPS} measured steps in "
           f"{', '.join(rough)}; treat it as a rough estimate (train longer).\n\n"
           if (rough := rough_b_simple(jobs)) else "")
        + (f"![sweep]({png.name})\n" if fixed else "")
        + (f"\n{adaptive}\n![adaptive batch]({adaptive_png.name})\n" if adaptive else "")
    )
    if fixed:
        plot(fixed, metric, target, png)
    if adaptive:
        report_adaptive.plot(root, jobs, metric, adaptive_png)
    return md, png if fixed else adaptive_png


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="trainer-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path, help="a multirun directory (or any folder of runs)")
    parser.add_argument("--metric", default=None,
                        help="the eval metric to compare (accuracy, loss, macro_f1, ...; default: "
                             "what the runs' early stopping or best checkpoint watched, else "
                             "accuracy, else loss)")
    parser.add_argument("--mode", choices=("max", "min"), default=None,
                        help="whether higher (max) or lower (min) values of it are better")
    parser.add_argument("--target", type=float, help="the value to time (accuracy as 0-1)")
    args = parser.parse_args(argv)
    if not args.dir.is_dir():
        parser.exit(2, f"trainer-report: error: {args.dir} is not a directory\n")
    md, png = write_report(args.dir, args.target, args.metric, args.mode)
    sys.stdout.write(md.read_text())
    print(f"wrote {md} and {png}")


if __name__ == "__main__":
    main()
