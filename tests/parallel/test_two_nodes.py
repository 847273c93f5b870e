"""Two nodes on one machine: two torchrun agents (``--nnodes=2``) meeting at a c10d rendezvous on
127.0.0.1, as two hosts' agents meet at one host's address. Every other multi-process test is
one agent on one host, so what depends on the node (local ranks, the node's first rank saying
things once, LOCAL_WORLD_SIZE) is only exercised here."""

from __future__ import annotations

import json
import socket
import subprocess

from tests.helpers import BIN, EQUIVALENCE, EXACT, SHRINK, finish, max_difference, run, weights


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(per_node: int, *args: str, cwd, node_args=((), ())) -> list[tuple[int, str, str]]:
    """``trainer ARGS`` on two torchrun agents of ``per_node`` workers each (node 0 hosts the
    rendezvous store); ``node_args``: extra overrides per node. Each agent's (exit code,
    stdout, stderr)."""
    port = _free_port()
    agents = [subprocess.Popen(
        [str(BIN / "torchrun"), "--nnodes=2", f"--nproc-per-node={per_node}",
         "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=two-nodes",
         f"--rdzv-conf=is_host={'true' if node == 0 else 'false'}", "--max-restarts=0",
         "-m", "trainer", *args, *node_args[node], *SHRINK],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for node in (0, 1)]
    results = []
    for agent in agents:
        out, err = finish(agent, timeout=240)
        results.append((agent.returncode, out, err))
    return results


def test_two_nodes_of_two_workers_reproduce_one_worker(tmp_path):
    """DDP over 2 agents x 2 workers (float64, per-sample dropout) = one worker to 1e-9: the
    global ranks span both nodes, the local ranks restart at 0 on each."""
    run("none", 1, *EQUIVALENCE, f"hydra.run.dir={tmp_path}/one", cwd=tmp_path)
    results = two_nodes(2, *EQUIVALENCE, f"hydra.run.dir={tmp_path}/four", cwd=tmp_path)
    for code, out, err in results:
        assert code == 0, (out + err)[-3000:]
    metrics = json.loads((tmp_path / "four" / "metrics.json").read_text())
    assert metrics["world_size"] == 4
    assert max_difference(weights(tmp_path / "one"), weights(tmp_path / "four")) < EXACT


def test_a_bad_config_on_one_node_is_said_once_per_node(tmp_path):
    """Node 1's agent was given another batch size: every rank finds it, and the first rank of
    each node says it, once on each node (not once per worker, nor only on one node);
    nothing is trained."""
    results = two_nodes(1, "trainer.max_steps=2",
                        f"hydra.run.dir={tmp_path}/run", cwd=tmp_path,
                        node_args=(("data.batch_size=128",), ("data.batch_size=256",)))
    line = "trainer: error: the workers composed different configs: rank 1 has data.batch_size="
    for code, _, err in results:
        assert code != 0
        assert err.count(line) == 1, err[-3000:]
    assert not list((tmp_path / "run").glob("checkpoints/step-*.pt"))
