"""The hot loop's bookkeeping off the step: the tally's counts, the frozen heap, start-up time.

Speed itself is bench/overhead.py's and bench/peers.py's to measure (docs/performance.md);
these tests hold what that speed must not change: the same metrics, the collector's state
handed back, the start-up figure users read in metrics.json."""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import subprocess
import sys
import time

import pytest
import torch

import trainer
from bench.peers import PEERS
from tests.helpers import ROOT, SHRINK, make_fake_mnist, run_cli
from trainer.engine.tally import KEEP_ELEMENTS, Tally
from trainer.tasks import Classification, batch_counts


class TopTwo(Classification):
    """A task with an extra sum (hits in the top two), to check extra sums add up too."""

    extra_sums = ("top2",)

    def counts(self, logits, targets):
        top2 = (logits.topk(2, dim=-1).indices == targets.unsqueeze(-1)).any(-1).sum()
        return torch.stack([self.count_correct(logits, targets), top2])


@pytest.mark.parametrize("task", [Classification(), TopTwo()], ids=["correct", "extra_sums"])
def test_tally_counts_what_counting_each_batch_counts(task):
    gen = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(8, 10)  # outputs that carry a graph, as a model's do
    shapes = [128, 128, 64, 128, 7]  # a grown or partial batch joins the run as well
    batches = [(layer(torch.randn(n, 8, generator=gen)), torch.randint(0, 10, (n,), generator=gen))
               for n in shapes]
    big = torch.randn(KEEP_ELEMENTS // 10 + 1, 10, generator=gen)  # counted at once
    batches.append((big, torch.randint(0, 10, (len(big),), generator=gen)))
    tally = Tally(task)
    for outputs, targets in batches:
        tally.add(outputs, targets)
    assert len(tally._kept) == len(shapes)  # no kernel ran for the small ones
    total = tally.take()
    expected = sum(batch_counts(task, o.detach(), t).double() for o, t in batches)
    assert torch.equal(total, expected) and not total.requires_grad
    assert tally.take() is None  # taken: nothing left


def test_tally_joins_outputs_only_where_their_shapes_match():
    task, gen = Classification(), torch.Generator().manual_seed(1)
    batches = [(torch.randn(16, c, generator=gen), torch.randint(0, c, (16,), generator=gen))
               for c in (12, 12, 9, 12)]
    tally = Tally(task)
    for outputs, targets in batches:
        tally.add(outputs, targets)
    expected = sum(batch_counts(task, o, t).double() for o, t in batches)
    assert torch.equal(tally.take(), expected)


def test_train_metrics_do_not_depend_on_how_often_the_loop_reads_them(tmp_path):
    """log_every=1 reads every step's loss and counts alone; 7 joins them in odd windows."""
    runs = {every: trainer.fit([*SHRINK, "trainer.epochs=2", f"trainer.log_every={every}",
                                "logger.tensorboard=false", "trainer.dtype=float64"],
                               run_dir=tmp_path / str(every))
            for every in (1, 7)}
    assert runs[1]["train_accuracy"] == runs[7]["train_accuracy"]
    assert runs[1]["train_loss"] == pytest.approx(runs[7]["train_loss"], rel=1e-12)
    assert runs[1]["test_accuracy"] == runs[7]["test_accuracy"]


class HeapWatch(trainer.Callback):
    def __init__(self) -> None:
        self.frozen: list[int] = []

    def on_step_end(self, run) -> None:
        self.frozen.append(gc.get_freeze_count())


def test_training_freezes_the_heap_it_was_built_with_and_hands_it_back(tmp_path):
    watch, garbage = HeapWatch(), []
    assert gc.get_freeze_count() == 0
    trainer.fit([*SHRINK, "trainer.max_steps=5", "logger.tensorboard=false"],
                callbacks=[watch], run_dir=tmp_path)
    assert len(watch.frozen) == 5 and min(watch.frozen) > 10_000  # torch, Hydra, the run
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    # A cycle made now is collected as before the run.
    cycle = [garbage]
    garbage.append(cycle)
    del cycle, garbage
    assert gc.collect() > 0


def test_metrics_json_says_how_long_the_process_took_to_start_training(tmp_path):
    started = time.monotonic()
    result = run_cli("trainer.max_steps=2", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    startup = json.loads((tmp_path / "metrics.json").read_text())["startup_s"]
    assert 0.3 < startup < elapsed  # at least the imports; less than the whole process


def test_the_cli_turns_collection_back_on_for_training_and_imports_nothing_unused(tmp_path):
    """The CLI pauses the collector while it starts; training must collect again. The default
    job needs neither plots, quantization nor torchvision: none of them is imported. As it
    exits, the CLI leaves what remains to the process's end (frozen: the interpreter's
    teardown skips walking it), its run's own objects collected before."""
    code = (
        "import gc, sys\n"
        "import trainer\n"
        "class Watch(trainer.Callback):\n"
        "    def on_step_end(self, run):\n"
        "        print('collecting', gc.isenabled(), flush=True)\n"
        "        unused = ('matplotlib', 'torchao', 'torchvision')\n"
        "        print('imported', [m for m in unused if m in sys.modules], flush=True)\n"
        "from trainer.engine import build\n"
        "built = build.build_callbacks\n"
        "build.build_callbacks = lambda cfg, given=(), *more: built(cfg, [*given, Watch()],\n"
        "                                                           *more)\n"
        "from trainer.tools.train import main\n"
        f"sys.argv = ['trainer', 'trainer.max_steps=2', 'hydra.run.dir={tmp_path}', *{SHRINK!r}]\n"
        "main()\n"
        "print('frozen at exit', gc.get_freeze_count() > 100_000, flush=True)\n"
        "import trainer.engine.loop as loop\n"
        "print('runs left', sum(isinstance(o, loop.Loop) for o in gc.get_objects()))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("collecting True") == 2
    assert result.stdout.count("imported []") == 2, result.stdout
    assert "frozen at exit True" in result.stdout and "runs left 0" in result.stdout
    assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == 2


def _bench(tmp_path, script: str, *args: str) -> subprocess.CompletedProcess:
    make_fake_mnist(tmp_path / "mnist", 1280, 200)
    result = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path,
                            env={**os.environ, "TRAINER_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_overhead_bench_times_the_trainer_command_against_the_plain_loop(tmp_path):
    # 10 steps an epoch in turns of 3: each side trains 4 turns, handing over after steps
    # 3, 6 and 9; whole runs too.
    result = _bench(tmp_path, "overhead.py", "--epochs", "1", "--rounds", "1",
                    "--lockstep-rounds", "1", "--turn-steps", "3", "--threads", "1",
                    "--startup-rounds", "1")
    out = result.stdout
    rows = [line for line in out.splitlines() if line.startswith("|       1 |")]
    assert len(rows) == 2  # taking turns, then whole runs
    for row in rows:
        assert 0.5 < float(row.split("|")[4].split()[0]) < 2.0
    assert "taking turns every 3 steps" in out and "start-up: process start" in out
    assert "Start-up, 1-step runs one right after the other (1 rounds" in out
    assert "start-up round 0 trainer: " in result.stderr
    for name in ("hand-written", "trainer"):
        line = result.stderr.split(f"lockstep round 0 {name}: ")[1].splitlines()[0]
        assert line.endswith("samples/s in 4 turns"), line


def test_the_plain_loop_stops_after_max_steps_across_epochs(tmp_path):
    """bench/overhead.py's start-up runs train one step: the hand-written loop must stop there
    as trainer.max_steps does (3 steps of 10-step epochs here: 3 batches' samples)."""
    make_fake_mnist(tmp_path / "mnist", 1280, 200)
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "plain_loop.py"), "--root", str(tmp_path / "mnist"),
         "--epochs", "2", "--max-steps", "13", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert round(got["samples_per_sec"] * got["train_time_s"]) == 13 * 128
    assert result.stdout.count("test accuracy") == 2  # into the second epoch, evaluated


@pytest.mark.slow
def test_peers_bench_runs_every_installed_contender_alone_and_under_ddp(tmp_path):
    out = _bench(tmp_path, "peers.py", "--epochs", "1", "--rounds", "1", "--lockstep-rounds",
                 "1", "--startup-rounds", "1", "--settings", "1x1", "2x1").stdout
    headers = [line for line in out.splitlines() if line.startswith("|") and "setting" in line]
    expected = ["hand-written", "trainer"] + [name for name, (package, _) in PEERS.items()
                                              if importlib.util.find_spec(package)]
    assert len(headers) == 2  # taking turns (1 process), then whole runs
    for header in headers:
        assert [c.strip() for c in header.strip("|").split("|")][1:] == expected
    assert out.count(" 1 process, 1 thread(s) |") == 2
    assert "2 processes (DDP, Gloo)" in out
    assert "Start-up, 1-step runs one right after the other (1 rounds" in out
    startup = [line for line in out.splitlines() if line.startswith("| start-up s")]
    assert len(startup) == 1 and len(startup[0].strip("|").split("|")) == len(expected) + 1
