"""``callbacks=[default,profiler]``: a ``torch.profiler`` trace of a few training steps, for
TensorBoard's profiler plugin (or chrome://tracing, Perfetto).

The profiler follows torch's schedule: it skips ``callbacks.profiler.wait`` steps, warms up for
``warmup`` (recording, then discarding: the first recorded steps carry the profiler's own
start-up), and records ``active`` steps, once. The trace is written to
``<run dir>/profile/rank<N>.<time>.pt.trace.json`` by ``tensorboard_trace_handler``: on the
primary rank, or on every rank with ``callbacks.profiler.all_ranks=true`` (a data-parallel stall
shows as one rank waiting in the all-reduce for another). CPU activity always, CUDA kernels
where the run is on a GPU.
"""

from __future__ import annotations

import torch

from trainer.callbacks import Callback


class Profiler(Callback):
    def __init__(self, wait: int = 5, warmup: int = 2, active: int = 5,
                 all_ranks: bool = False) -> None:
        for name, value, least in (("wait", wait, 0), ("warmup", warmup, 0),
                                   ("active", active, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"{name}={value!r}: use a step count >= {least}")
        self.wait, self.warmup, self.active, self.all_ranks = wait, warmup, active, all_ranks
        self.profiler: torch.profiler.profile | None = None

    def on_fit_start(self, run) -> None:
        if not (run.is_primary or self.all_ranks):
            return
        activities = [torch.profiler.ProfilerActivity.CPU]
        if run.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        folder = run.run_dir / "profile"
        self.profiler = torch.profiler.profile(
            activities=activities,
            schedule=torch.profiler.schedule(wait=self.wait, warmup=self.warmup,
                                             active=self.active, repeat=1),
            on_trace_ready=torch.profiler.tensorboard_trace_handler(
                str(folder), worker_name=f"rank{run.rank}"),
            record_shapes=True,
        )
        self.profiler.start()
        run.logger.info(f"profiler: steps {run.step + self.wait + self.warmup + 1}-"
                        f"{run.step + self.wait + self.warmup + self.active} go to {folder}")

    def on_step_end(self, run) -> None:
        if self.profiler is not None:
            self.profiler.step()

    def on_fit_end(self, run, metrics) -> None:
        if self.profiler is not None:
            self.profiler.stop()  # a run shorter than the schedule still writes what it has
            self.profiler = None
