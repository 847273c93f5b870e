"""A log output of the project's own: every logged value as one JSON line in log.jsonl.

Added beside TensorBoard by config (``+logger.outputs.jsonl._target_=shapes.outputs.JsonLines``);
it gets the same scalars, hyper-parameters and final metrics as every other output, on the
primary rank only.
"""

import json

import trainer


class JsonLines(trainer.LogOutput):
    def __init__(self, filename: str = "log.jsonl") -> None:
        self.filename = filename
        self.file = None

    def open(self, run_dir, resumed_step):
        self.file = (run_dir / self.filename).open("a")

    def scalars(self, values, step):
        for tag, value in values.items():
            self.file.write(json.dumps({"step": step, "tag": tag, "value": value}) + "\n")

    def finish(self, hparams, metrics):
        self.file.write(json.dumps({"hparams": hparams, "metrics": metrics}) + "\n")

    def close(self):
        if self.file is not None:
            self.file.close()
            self.file = None
