"""``callbacks=[default,profiler]``: a ``torch.profiler`` trace of a few training steps, for
TensorBoard's profiler plugin (or chrome://tracing, Perfetto).

The profiler follows torch's schedule: it skips ``callbacks.profiler.wait`` steps, warms up for
``warmup`` (recording, then discarding: the first recorded steps carry the profiler's own
start-up), and records ``active`` steps, once. The trace is written to
``<run dir>/profile/rank<N>.<time>.pt.trace.json`` by ``tensorboard_trace_handler``: on the
primary rank, or on every rank with ``callbacks.profiler.all_ranks=true`` (a data-parallel stall
shows as one rank waiting in the all-reduce for another). CPU activity always, CUDA kernels
where the run is on a GPU.

Kineto, the library under torch's profiler, writes its own lines to the process's stderr from
C++ when it starts and stops: "USDT ... profiler_start/stop" marks, and on a machine without a
GPU "ERROR ... gpuGetDeviceCount failed with code 35" (it looks for a GPU to describe in the
trace). None is an error of the run; they are caught at those two moments and dropped, and
anything else written then is passed on.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

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
        self._steps = 0  # profiler.step() calls so far
        self._noise = _KINETO_MARKS

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
        if run.device.type != "cuda":
            self._noise = re.compile(f"{_KINETO_MARKS.pattern}|{_NO_GPU.pattern}")
        with _dropping(self._noise):
            self.profiler.start()
        run.logger.info(f"profiler: steps {run.step + self.wait + self.warmup + 1}-"
                        f"{run.step + self.wait + self.warmup + self.active} go to {folder}")

    def on_step_end(self, run) -> None:
        if self.profiler is not None:
            self._steps += 1
            # Kineto is prepared after the wait, starts after the warmup and stops (writing
            # the trace) after the active steps: only those calls are caught (a file
            # descriptor swap, not one every step).
            if self._steps in (self.wait, self.wait + self.warmup,
                               self.wait + self.warmup + self.active):
                with _dropping(self._noise):
                    self.profiler.step()
            else:
                self.profiler.step()

    def on_fit_end(self, run, metrics) -> None:
        if self.profiler is not None:
            with _dropping(self._noise):
                self.profiler.stop()  # a run shorter than the schedule still writes what it has
            self.profiler = None


_KINETO_MARKS = re.compile(r"^USDT:.*profiler_(start|stop)")
_NO_GPU = re.compile(r"^ERROR:.*gpuGetDeviceCount failed")


@contextlib.contextmanager
def _dropping(noise: re.Pattern):
    """The process's stderr (file descriptor 2, where C++ writes) caught while the block runs;
    then every line that is not ``noise`` written on."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            for line in caught.read().decode(errors="replace").splitlines(keepends=True):
                if not noise.search(line):
                    sys.stderr.write(line)
            sys.stderr.flush()
