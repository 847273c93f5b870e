"""Every rank checks at start that all ranks composed the same config: workers launched with
different overrides stop with one line naming the first key that differs (they used to train
silently to exit 0)."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import BIN, SHRINK, needs_mpi


@needs_mpi
def test_workers_with_different_configs_stop_naming_the_key(tmp_path):
    trainer = [sys.executable, "-m", "trainer", *SHRINK, "trainer.max_steps=2",
               f"hydra.run.dir={tmp_path}/run"]
    # MPMD launch: rank 0 and rank 1 get different batch sizes.
    done = subprocess.run(
        [str(BIN / "mpiexec"), "-n", "1", *trainer, "data.batch_size=128", ":",
         "-n", "1", *trainer, "data.batch_size=256"],
        cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert done.returncode != 0
    line = ("trainer: error: the workers composed different configs: rank 1 has "
            "data.batch_size=256 where rank 0 has 128; launch every worker with the same "
            "overrides")
    # Both ranks find it; the node's first rank says it, once.
    assert done.stderr.count(line) == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert not list((tmp_path / "run").glob("checkpoints/step-*.pt"))
