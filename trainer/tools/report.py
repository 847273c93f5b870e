"""``trainer-report DIR``: the batch-size study of a Hydra multirun, as a table and a plot.

Reads every job under DIR (each job folder holds the ``metrics.json`` a run writes, with its
global batch and per-evaluation history) and writes into DIR:

- ``report.md``: one row per job, sorted by global batch size: final test metric, steps,
  training time, time to the target, samples/s and the measured gradient noise scale B_simple;
- ``report.png``: the same four quantities against the batch size (log scale).

The target defaults to the best value that EVERY job reached at some evaluation (the lowest
of the jobs' best accuracies; for a task without accuracy, the highest of their lowest test
losses), so each batch size has a time to it and "time to target" asks how fast each one gets
there. ``--target`` sets it explicitly; the report then names the jobs that never reached it.
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


@dataclass
class Job:
    name: str  # the job folder, relative to DIR
    batch: int
    metrics: dict


def load_jobs(root: Path) -> list[Job]:
    """Every finished job under ``root`` (a folder with a metrics.json), by batch size."""
    jobs = []
    for path in sorted(root.rglob("metrics.json")):
        folder = path.parent
        metrics = json.loads(path.read_text())
        jobs.append(Job(str(folder.relative_to(root)) or ".", int(metrics["global_batch_size"]),
                        metrics))
    return sorted(jobs, key=lambda j: (j.batch, j.name))


def metric_name(jobs: list[Job]) -> str:
    """eval/accuracy when the jobs have one (classification), else eval/loss."""
    return "eval/accuracy" if all(j.metrics.get("test_accuracy") is not None for j in jobs) \
        else "eval/loss"


def final_value(job: Job, metric: str) -> float | None:
    return job.metrics.get("test_accuracy" if metric == "eval/accuracy" else "test_loss")


FEW_STEPS = 100  # B_simple from fewer measured steps than this is flagged as rough


def best_reached(job: Job, metric: str) -> float | None:
    """The best value of ``metric`` at any evaluation of the job (its final one included)."""
    values = [e[metric] for e in job.metrics.get("history", []) if e.get(metric) is not None]
    final = final_value(job, metric)
    values += [final] if final is not None else []
    if not values:
        return None
    return max(values) if metric == "eval/accuracy" else min(values)


def default_target(jobs: list[Job], metric: str) -> float:
    """The best value every job reached: the worst of the jobs' bests."""
    values = [v for j in jobs if (v := best_reached(j, metric)) is not None]
    return min(values) if metric == "eval/accuracy" else max(values)


def missed_target(jobs: list[Job], metric: str, target: float) -> list[str]:
    """The jobs whose evaluations never reached ``target``."""
    return [j.name for j in jobs if time_to_target(j, metric, target) is None]


def rough_b_simple(jobs: list[Job]) -> list[str]:
    """Jobs whose B_simple rests on fewer than FEW_STEPS measured steps."""
    return [f"{j.name} ({j.metrics['b_simple_steps']} steps)" for j in jobs
            if j.metrics.get("b_simple") is not None
            and j.metrics.get("b_simple_steps") is not None
            and j.metrics["b_simple_steps"] < FEW_STEPS]


def time_to_target(job: Job, metric: str, target: float) -> float | None:
    """Training seconds at the first evaluation that reached ``target``, or None."""
    for entry in job.metrics.get("history", []):
        value = entry.get(metric)
        if value is None:
            continue
        if (value >= target) if metric == "eval/accuracy" else (value <= target):
            return float(entry["train_time_s"])
    return None


def _fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, spec)


def _target_text(target: float, accuracy: bool) -> str:
    return f"{100 * target:.2f}%" if accuracy else f"{target:.4g}"


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


def table(jobs: list[Job], metric: str, target: float) -> str:
    accuracy = metric == "eval/accuracy"
    head = "test accuracy (%)" if accuracy else "test loss"
    target_text = _target_text(target, accuracy)
    lines = [
        f"| global batch | {head} | epochs | steps | train time (s) | time to {target_text} (s) "
        "| samples/s | B_simple | job |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for j in jobs:
        m = j.metrics
        value = final_value(j, metric)
        shown = 100 * value if (accuracy and value is not None) else value
        lines.append(
            f"| {j.batch} | {_fmt(shown, '.2f' if accuracy else '.4f')} | "
            f"{_fmt(m.get('epochs'), '.1f')} | {m.get('steps', '—')} | "
            f"{_fmt(m.get('train_time_s'), '.3g')} | "
            f"{_fmt(time_to_target(j, metric, target), '.3g')} | "
            f"{_fmt(m.get('samples_per_sec'), ',.0f')} | {b_simple_text(j)} | "
            f"{j.name} |"
        )
    return "\n".join(lines) + "\n"


def plot(jobs: list[Job], metric: str, target: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on cluster nodes
    import matplotlib.pyplot as plt

    accuracy = metric == "eval/accuracy"
    batches = [j.batch for j in jobs]
    panels = [
        ("test accuracy (%)" if accuracy else "test loss",
         [(100 * v if accuracy else v) if (v := final_value(j, metric)) is not None else None
          for j in jobs]),
        (f"time to {_target_text(target, accuracy)} (s)",
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


def write_report(root: Path, target: float | None = None) -> tuple[Path, Path]:
    """Write report.md and report.png into ``root``; returns their paths."""
    jobs = load_jobs(root)
    if not jobs:
        raise SystemExit(
            f"trainer-report: error: no metrics.json under {root}; point it at a multirun "
            "directory whose jobs have finished (e.g. multirun/mnist/2026-01-01_12-00-00)"
        )
    metric = metric_name(jobs)
    default = target is None
    target = default_target(jobs, metric) if default else target
    md, png = root / "report.md", root / "report.png"
    md.write_text(
        f"# Batch-size sweep: {root}\n\n{table(jobs, metric, target)}\n"
        f"Target: {metric} {'>=' if metric == 'eval/accuracy' else '<='} {target:.4g}"
        + (" (the best every job reached)" if default else "")
        + "; times are training seconds (evaluation and checkpoints excluded), read at "
        "evaluations.\n\n"
        + (f"Never reached the target: {', '.join(missed)}.\n\n"
           if (missed := missed_target(jobs, metric, target)) else "")
        + (f"B_simple: {why}.\n\n" if (why := b_simple_empty_reason(jobs)) else "")
        + (f"Warning: B_simple rests on fewer than {FEW_STEPS} measured steps in "
           f"{', '.join(rough)}; treat it as a rough estimate (train longer).\n\n"
           if (rough := rough_b_simple(jobs)) else "")
        + f"![sweep]({png.name})\n"
    )
    plot(jobs, metric, target, png)
    return md, png


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="trainer-report", description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("dir", type=Path, help="a multirun directory (or any folder of runs)")
    parser.add_argument("--target", type=float, default=None,
                        help="test accuracy (0-1) or, for regression, test loss to time")
    args = parser.parse_args(argv)
    if not args.dir.is_dir():
        parser.exit(2, f"trainer-report: error: {args.dir} is not a directory\n")
    md, png = write_report(args.dir, args.target)
    sys.stdout.write(md.read_text())
    print(f"wrote {md} and {png}")


if __name__ == "__main__":
    main()
