"""trainer-report's part for runs that chose their own batch (``data.batch_size=auto``).

For each such run: the batch, AdaScale's gain, the learning rate, B_simple and the predicted
goodput at every decision point (its metrics.json ``batch_trace``), each change of batch with
its reason (its ``batch_plan.json``), and ``report_adaptive.png``: the batch, B_simple and the
predicted goodput over the samples seen, and the validation metric against training time
next to every fixed-batch run of the same folder (a sweep's curves).
"""

from __future__ import annotations

import json
from pathlib import Path

PLOT = "report_adaptive.png"


def is_adaptive(job) -> bool:
    """Whether a job chose its batch (the controller wrote its trace)."""
    return "batch_trace" in job.metrics


def _plan(root: Path, job) -> dict | None:
    path = root / job.name / "batch_plan.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _num(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def section(root: Path, jobs: list) -> str:
    """The markdown of every adaptive job (empty when there is none)."""
    parts = []
    for job in (j for j in jobs if is_adaptive(j)):
        m, trace = job.metrics, job.metrics["batch_trace"]
        lines = [
            f"## Adaptive batch: {job.name}\n",
            f"Global batch {m.get('global_batch_size')} at the start, "
            f"{m.get('final_global_batch_size')} at the end, {m.get('batch_changes', 0)} "
            f"changes (the profile's included); {len(trace)} decision points. Goodput is "
            "the predicted base-batch samples' worth of progress per second (throughput "
            "fitted to the run's own step times x (B_simple + M0) / (B_simple + M)).\n",
            "| step | samples | batch | B_simple | AdaScale gain | lr | predicted goodput "
            "| best batch | its goodput | changed |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for t in trace:
            lines.append(
                f"| {t['step']} | {t['samples']:,} | {t['batch']} | {_num(t['b_simple'], ',.0f')} "
                f"| {_num(t['gain'], '.2f')} | {_num(t['lr'], '.3g')} "
                f"| {_num(t['goodput'], ',.0f')} | {t['best']} "
                f"| {_num(t['best_goodput'], ',.0f')} | {'yes' if t['changed'] else ''} |")
        plan = _plan(root, job)
        if plan and plan.get("decisions"):
            lines.append("\nChanges (batch_plan.json):\n")
            for d in plan["decisions"]:
                lines.append(f"- step {d.get('step', 0)} ({d['samples']:,} samples): "
                             f"{d.get('old', '?')} -> {d['new']}: {d.get('reason') or 'given'}")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def _batch_steps(plan: dict | None, job) -> tuple[list[int], list[int]]:
    """The plan's batch as a step function of samples seen, to the run's last sample."""
    end = max((h.get("samples", 0) for h in job.metrics.get("history", [])), default=0)
    if not plan:
        return [0, end], [job.batch, job.batch]
    xs, ys = [0], [plan["initial"]]
    for d in plan["decisions"]:
        xs += [d["samples"], d["samples"]]
        ys += [ys[-1], d["new"]]
    xs.append(max(end, xs[-1]))
    ys.append(ys[-1])
    return xs, ys


def plot(root: Path, jobs: list, metric, out: Path) -> None:
    """``report_adaptive.png``: batch, B_simple and goodput of each adaptive job over samples
    seen; the validation metric against training time for every job."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    adaptive = [j for j in jobs if is_adaptive(j)]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    (batch_ax, noise_ax), (goodput_ax, curve_ax) = axes
    for job in adaptive:
        trace = job.metrics["batch_trace"]
        batch_ax.plot(*_batch_steps(_plan(root, job), job), label=job.name)
        noise_ax.plot([t["samples"] for t in trace], [t["b_simple"] for t in trace],
                      marker=".", label=f"B_simple {job.name}")
        noise_ax.plot([t["samples"] for t in trace], [t["batch"] for t in trace],
                      linestyle="--", label=f"batch {job.name}")
        goodput_ax.plot([t["samples"] for t in trace], [t["goodput"] for t in trace],
                        marker=".", label=f"at the batch ({job.name})")
        goodput_ax.plot([t["samples"] for t in trace], [t["best_goodput"] for t in trace],
                        linestyle=":", label=f"at the best batch ({job.name})")
    for job in jobs:
        points = [(h["train_time_s"], metric.at(h)) for h in job.metrics.get("history", [])
                  if metric.at(h) is not None and h.get("train_time_s") is not None]
        if points:
            scale = 100 if metric.percent else 1
            curve_ax.plot([t for t, _ in points], [scale * v for _, v in points],
                          linewidth=2.5 if is_adaptive(job) else 1,
                          label=f"auto ({job.name})" if is_adaptive(job) else f"batch {job.batch}")
    for ax, title, xlabel in [
        (batch_ax, "global batch", "samples seen"),
        (noise_ax, "B_simple (and the batch) at each decision", "samples seen"),
        (goodput_ax, "predicted goodput (base-batch samples/s)", "samples seen"),
        (curve_ax, f"val/{metric.name}", "training time (s)"),
    ]:
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in (batch_ax, noise_ax):
        ax.set_yscale("log", base=2)
    fig.suptitle("adaptive batch (data.batch_size=auto)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
