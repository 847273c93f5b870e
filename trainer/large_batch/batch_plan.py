"""A run's batch plan: the global batch it trains at, and every change, keyed by samples seen.

The adaptive batch size decides at deterministic points (every K samples) and records each
decision here; the plan is what makes the run exact: a resumed run replays the recorded
decisions up to its checkpoint, and a plan written to ``batch_plan.json`` can be replayed by
another run without any timing (``data.batch_plan=PATH``), on any number of workers.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from trainer.errors import UserError


@dataclass(frozen=True)
class Decision:
    """At ``samples`` samples seen (after ``step`` steps) the global batch went from ``old``
    to ``new``; why: the predicted goodput gain, the noise scale and the throughput model
    it was predicted from (empty in a hand-written plan)."""

    samples: int
    new: int
    old: int = 0
    step: int = 0
    predicted_gain: float | None = None
    noise_scale: float | None = None
    model: dict = field(default_factory=dict)
    reason: str = ""  # in words: "profile", "predicted goodput x1.32 at B_simple 1,200"...


class BatchPlan:
    def __init__(self, initial: int, decisions: list[Decision] | None = None) -> None:
        self.initial = initial
        self.decisions: list[Decision] = []
        for decision in decisions or []:
            self.record(decision)

    def batch_at(self, samples: int) -> int:
        """The global batch of the step that starts at ``samples`` samples seen."""
        i = bisect.bisect_right([d.samples for d in self.decisions], samples)
        return self.decisions[i - 1].new if i else self.initial

    def record(self, decision: Decision) -> None:
        """Append a change (decisions come in order of samples seen; a second one at the
        same point replaces the first: a resume on another world size re-quantising the
        batch a decision had just set)."""
        if self.decisions and decision.samples == self.decisions[-1].samples:
            self.decisions.pop()
        if self.decisions and decision.samples <= self.decisions[-1].samples:
            raise ValueError(f"a batch decision at {decision.samples} samples comes after "
                             f"the one at {self.decisions[-1].samples}")
        if decision.new < 1:
            raise ValueError(f"a batch decision sets the global batch to {decision.new}")
        self.decisions.append(decision)

    def state_dict(self) -> dict:
        return {"initial": self.initial, "decisions": [asdict(d) for d in self.decisions]}

    @classmethod
    def from_state(cls, state: dict) -> BatchPlan:
        return cls(int(state["initial"]), [Decision(**d) for d in state["decisions"]])

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.state_dict(), indent=1) + "\n")

    @classmethod
    def read(cls, path: Path) -> BatchPlan:
        """A plan file (``data.batch_plan``), or one line saying what is wrong with it."""
        try:
            return cls.from_state(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise UserError(f"data.batch_plan={path}: no such file; give the batch_plan.json "
                            "of the run to replay") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"data.batch_plan={path} is not a batch plan ({exc}); give the "
                            "batch_plan.json a run with data.batch_size=auto wrote") from None
