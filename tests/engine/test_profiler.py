"""callbacks=[default,profiler]: a torch.profiler trace of the scheduled steps, per rank."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import run, train_in_process

PROFILE = ("callbacks=[default,profiler]", "callbacks.profiler.wait=2",
           "callbacks.profiler.warmup=1", "callbacks.profiler.active=3", "trainer.max_steps=12",
           "logger.sample_predictions=0")


def _steps(trace: Path) -> list[str]:
    events = json.loads(trace.read_text())["traceEvents"]
    return sorted({e["name"] for e in events if e.get("name", "").startswith("ProfilerStep#")})


def test_the_trace_holds_the_active_steps(tmp_path, capfd):
    train_in_process(tmp_path, *PROFILE)
    # Kineto's own C++ lines (its start/stop marks; on a CPU "ERROR ... gpuGetDeviceCount
    # failed with code 35") are not the run's: none reaches the terminal.
    err = capfd.readouterr().err
    assert "gpuGetDeviceCount" not in err and "USDT" not in err, err
    traces = list((tmp_path / "profile").glob("rank0.*.pt.trace.json"))
    assert len(traces) == 1
    # wait 2, warm up 1, record 3: the profiler's steps 3-5 (the run's steps 4-6).
    assert _steps(traces[0]) == ["ProfilerStep#3", "ProfilerStep#4", "ProfilerStep#5"]
    events = json.loads(traces[0].read_text())["traceEvents"]
    assert any(e.get("name", "").startswith("aten::") for e in events)  # the ops themselves


def test_every_rank_writes_its_trace_when_asked(tmp_path):
    run("torchrun", 2, *PROFILE, "callbacks.profiler.all_ranks=true",
        f"hydra.run.dir={tmp_path}/r", cwd=tmp_path)
    names = sorted(p.name.split(".")[0] for p in (tmp_path / "r" / "profile").glob("*.json"))
    assert names == ["rank0", "rank1"]
    run("torchrun", 2, *PROFILE, f"hydra.run.dir={tmp_path}/p", cwd=tmp_path)
    assert [p.name.split(".")[0] for p in (tmp_path / "p" / "profile").glob("*.json")] == [
        "rank0"]
