"""Bad checkpoints, read back by a resume and by the ``trainer-*`` commands, as a table: one
line naming the problem and the fix, exit 2, no traceback, nothing run from the file (a pickle
payload never executes), and a stored config's interpolations kept as text (the rows of the
config and data files are in ``tests/config/test_bad_input_table.py``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tests.helpers import ROOT, cli_in_process
from tests.helpers.errors import one_line_error


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A good checkpoint, and bad ones beside it: a pickle payload, an empty file, text."""
    folder = tmp_path_factory.mktemp("ckpt")
    good = cli_in_process("trainer.max_steps=2", f"hydra.run.dir={folder}/run", cwd=folder)
    assert good.returncode == 0, good.stderr[-2000:]

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {folder}/pwned",))

    torch.save({"model": Payload()}, folder / "payload.pt")
    (folder / "empty.pt").write_bytes(b"")
    (folder / "text.pt").write_text("not a checkpoint\n")
    state = torch.load(folder / "run/checkpoints/step-00000002.pt", weights_only=True)
    for name, (part, key, value) in TAMPERED.items():
        changed = {**state, part: {**state[part], key: value} if key else value}
        if value is None:
            del changed[part]
        torch.save(changed, folder / name)
    return folder


# name -> (part of the checkpoint, its key (None: the whole part), the value put there).
TAMPERED = {
    "negative-step.pt": ("progress", "step", -5),
    "huge-step.pt": ("progress", "step", 10**9),
    "no-config.pt": ("config", None, None),
    "string-config.pt": ("config", None, "lr: 0.1"),
    "extra-weight.pt": ("model", "extra.weight", torch.zeros(3)),
    "misshaped-weight.pt": ("model", "1.weight", torch.zeros(2, 2)),
}

CHECKPOINTS = [
    ("payload.pt", "holds Python objects that safe loading refuses"),
    ("empty.pt", "is truncated or not a torch file"),
    ("text.pt", "is truncated or not a torch file"),
    ("negative-step.pt", "negative-step.pt holds an impossible progress (step -5): it was "
                         "edited or damaged"),
    ("huge-step.pt", "holds an impossible progress (step 1000000000, epoch 0, batch 2, 128 "
                     "samples consumed)"),
    ("no-config.pt", "the checkpoint is not a trainer checkpoint (missing config)"),
    ("string-config.pt", "is not a trainer checkpoint (config is a str, not a mapping)"),
    ("extra-weight.pt", "does not fit this model/optimizer (Unexpected key(s) in state_dict: "
                        '"extra.weight".)'),
    ("misshaped-weight.pt", "does not fit this model/optimizer (size mismatch for 1.weight"),
]


@pytest.mark.parametrize("name,needle", CHECKPOINTS)
def test_bad_checkpoint_to_resume_from(checkpoints, tmp_path, name, needle):
    done = cli_in_process(f"trainer.resume={checkpoints / name}",
                          f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    one_line_error(done, needle, prefix="trainer: error: ")
    assert not (checkpoints / "pwned").exists()


def _command(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


COMMANDS = [
    ("trainer.tools.predict", ["{ckpt}/payload.pt", "x.png"], "trainer-predict: error: ",
     "holds Python objects that safe loading refuses"),
    ("trainer.tools.predict", ["{ckpt}/nowhere", "x.png"], "trainer-predict: error: ", ""),
    ("trainer.tools.export", ["{ckpt}/empty.pt"], "trainer-export: error: ", ""),
    ("trainer_recipes.headlines.generate", ["{ckpt}/run", "the", "--words", "-5"],
     "trainer-generate: error: ", "--words -5 is invalid: use an integer >= 1"),
    ("trainer_recipes.headlines.generate", ["{ckpt}/run", "the", "--temperature", "0"],
     "trainer-generate: error: ", "--temperature 0.0 is invalid: use a number > 0"),
    ("trainer_recipes.headlines.generate", ["{ckpt}/run", "the"], "trainer-generate: error: ",
     "is not a headline-model checkpoint"),
    ("trainer.tools.report", ["{ckpt}/nowhere"], "trainer-report: error: ", ""),
    ("trainer.tools.evaluate", ["{ckpt}/string-config.pt"], "trainer-evaluate: error: ",
     "(config is a str, not a mapping)"),
    ("trainer.tools.predict", ["{ckpt}/misshaped-weight.pt", "--split", "test"],
     "trainer-predict: error: ", "do not fit the model MLP (size mismatch for 1.weight"),
]


@pytest.mark.parametrize("module,args,prefix,needle", COMMANDS,
                         ids=[f"{c[0].rsplit('.', 1)[1]} {' '.join(c[1][1:]) or c[1][0]}"
                              for c in COMMANDS])
def test_bad_input_to_a_command(checkpoints, module, args, prefix, needle):
    done = _command(module, *[a.format(ckpt=checkpoints) for a in args])
    one_line_error(done, needle, prefix=prefix)
    assert not (checkpoints / "pwned").exists()


def test_interpolations_in_a_stored_config_stay_text(checkpoints, tmp_path, monkeypatch):
    """A run stores its config resolved: a ``${...}`` found in a checkpoint was put there by
    someone else, and reading it must neither read the environment nor run a resolver."""
    from trainer.engine.inference import restore

    monkeypatch.setenv("TRAINER_TEST_SECRET", "leaked")
    state = torch.load(checkpoints / "run/checkpoints/step-00000002.pt", weights_only=True)
    config = {**state["config"], "description": "${oc.env:TRAINER_TEST_SECRET}",
              "trainer": {**state["config"]["trainer"], "log_every": "${no_such_resolver:1}"}}
    torch.save({**state, "config": config}, tmp_path / "interpolated.pt")
    restored = restore(tmp_path / "interpolated.pt", need_data=False)
    try:
        assert restored.cfg.description == "${oc.env:TRAINER_TEST_SECRET}"
        assert restored.cfg.trainer.log_every == "${no_such_resolver:1}"
    finally:
        restored.backend.close()
