"""The simple gradient noise scale B_simple (McCandlish et al. 2018), estimated while training.

B_simple = tr(Sigma) / |G|^2, with G the true gradient and Sigma the per-sample gradient
covariance, predicts the critical batch size: below it, doubling the batch nearly halves the
steps to a given loss; well above it, extra samples per step are mostly wasted.

The paper's Appendix A.1: with the squared norms of gradient estimates of the same step at
batch sizes b < B, both unbiased estimators

    |G|^2  ~  (B |G_B|^2 - b |G_b|^2) / (B - b)
    tr(S)  ~  (|G_b|^2 - |G_B|^2) / (1/b - 1/B)

are too noisy on their own, so each is smoothed with an exponential moving average and
B_simple is the ratio of the two averages (with equal decay the EMA bias correction cancels in
the ratio). |G_b|^2 is the MEAN over every small-batch gradient of the step (each micro-batch
of each worker): the same expectation as one of them, a much smaller variance.

- b: one micro-batch of one worker (the per-worker batch / trainer.accumulate), its gradient
  read by a tensor hook on each parameter (before it is accumulated into ``.grad``, hence
  before DDP's or Horovod's all-reduce); B: the global batch, the averaged gradient the
  optimizer steps with.
- With ``trainer.accumulate`` >= 2 (any backend) this needs no extra backward pass (only a
  norm per parameter per micro-batch), so ``trainer.noise_scale=auto`` measures it; ``always``
  also measures it with one backward per step (several workers: each worker's own gradient is
  a small batch; one process: the step is split in two micro-batches).

Beside the estimate a running standard error (the EMA-weighted variance of the per-step
estimates, the delta method for the ratio) says how far to trust it. While the |G|^2 average is
not clearly above zero (less than two standard errors), B_simple is reported as not measurable,
never as a (possibly negative) number, with what would make it measurable.

Nothing here synchronises the host in the hot path: norms stay on the device until the loop's
next log line, when they are read with the losses.
"""

from __future__ import annotations

import functools
import math
import weakref

import torch

from trainer.compat import graph_task_id
from trainer.errors import UserError

# |G|^2 counts as measured once its average is this many standard errors above zero.
_SIGNIFICANT = 2.0


class NoiseScale:
    """EMAs of the per-step estimates of |G|^2 and tr(Sigma), their ratio and its uncertainty.

    Args:
        decay: EMA decay per step, in [0, 1); 0.95 averages over roughly the last 40 steps
            (the EMA's effective sample size is (1 + decay) / (1 - decay)).
    """

    def __init__(self, decay: float = 0.95) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"noise scale EMA decay={decay} must be in [0, 1)")
        self.decay = decay
        self.grad_sq = 0.0  # EMA of |G|^2 estimates (not bias-corrected)
        self.trace = 0.0  # EMA of tr(Sigma) estimates
        # EMAs of the squares and the product, for the variances; the weight sums for the
        # bias correction (w) and the effective sample size (w^2 / w2).
        self.grad_sq_sq = self.trace_sq = self.cross = 0.0
        self.weight = self.weight_sq = 0.0
        self.steps = 0
        self.batch_sizes = (0, 0)  # b and B of the latest step, for messages
        # (small_sq, big_sq, b_small, b_big) per step, norms still on the device.
        self.pending: list[tuple[torch.Tensor, torch.Tensor, int, int]] = []

    def record(self, small_sq: torch.Tensor, big_sq: torch.Tensor, b_small: int,
               b_big: int) -> None:
        """One step's mean small-batch and large-batch squared gradient norms (b < B)."""
        self.pending.append((small_sq, big_sq, b_small, b_big))

    def to_average(self) -> torch.Tensor | None:
        """What the loop's log-line all-reduce averages over workers for this estimate: each
        pending step's small-batch norm (each worker's own); None when nothing is pending.
        The large-batch norms are already the averaged gradient's, equal on every worker."""
        if not self.pending:
            return None
        return torch.stack([small for small, _, _, _ in self.pending]).double()

    def averaged(self, small_sq: list[float]) -> None:
        """The pending steps' small-batch norms averaged over workers: fold them in."""
        big = torch.stack([big for _, big, _, _ in self.pending]).double().tolist()
        self.update(small_sq, big)

    def update(self, small_sq: list[float], big_sq: list[float]) -> None:
        """Fold the pending steps in, given their norms read back (and averaged over workers)."""
        for s, g, (_, _, b, big) in zip(small_sq, big_sq, self.pending, strict=True):
            self.fold(s, g, b, big)
        self.pending.clear()

    def fold(self, small_sq: float, big_sq: float, b: float, big: float) -> bool:
        """One step's mean small-batch (batch ``b``) and large-batch (batch ``big``) squared
        norms into the averages; False (nothing folded) for a non-finite step."""
        s, g, d = small_sq, big_sq, self.decay
        if not (math.isfinite(s) and math.isfinite(g)):
            return False  # an fp16 overflow step: the optimizer skipped it too
        self.batch_sizes = (b, big)
        grad_sq = (big * g - b * s) / (big - b)
        trace = (s - g) / (1.0 / b - 1.0 / big)
        self.grad_sq = d * self.grad_sq + (1 - d) * grad_sq
        self.trace = d * self.trace + (1 - d) * trace
        self.grad_sq_sq = d * self.grad_sq_sq + (1 - d) * grad_sq * grad_sq
        self.trace_sq = d * self.trace_sq + (1 - d) * trace * trace
        self.cross = d * self.cross + (1 - d) * grad_sq * trace
        self.weight = d * self.weight + (1 - d)
        self.weight_sq = d * d * self.weight_sq + (1 - d) ** 2
        self.steps += 1
        return True

    def means(self) -> tuple[float, float]:
        """The bias-corrected averages of |G|^2 and tr(Sigma) (0, 0 before any step)."""
        if self.weight <= 0:
            return 0.0, 0.0
        return self.grad_sq / self.weight, self.trace / self.weight

    # --- what the estimate says -----------------------------------------------------------

    @property
    def effective_steps(self) -> float:
        """How many independent steps the EMA is worth (at most (1 + decay) / (1 - decay))."""
        return self.weight**2 / self.weight_sq if self.weight_sq > 0 else 0.0

    def _moments(self) -> tuple[float, float, float, float, float]:
        """Bias-corrected means of |G|^2 and tr(S), their variances across steps, covariance."""
        w, n = self.weight, self.effective_steps
        g, t = self.grad_sq / w, self.trace / w
        bessel = n / (n - 1) if n > 1 else math.inf
        var_g = max(self.grad_sq_sq / w - g * g, 0.0) * bessel
        var_t = max(self.trace_sq / w - t * t, 0.0) * bessel
        return g, t, var_g, var_t, (self.cross / w - g * t) * bessel

    @property
    def grad_sq_stderr(self) -> float | None:
        if self.steps < 2:
            return None
        return math.sqrt(self._moments()[2] / self.effective_steps)

    @property
    def trace_stderr(self) -> float | None:
        if self.steps < 2:
            return None
        return math.sqrt(self._moments()[3] / self.effective_steps)

    @property
    def measurable(self) -> bool:
        """Whether the |G|^2 average is clearly (two standard errors) above zero, and the
        tr(Sigma) average above zero: only then is the ratio a batch size."""
        se = self.grad_sq_stderr
        return (se is not None and self.trace > 0
                and self.grad_sq / self.weight > _SIGNIFICANT * se)

    @property
    def value(self) -> float | None:
        """The current B_simple, or None while it is not measurable."""
        return self.trace / self.grad_sq if self.measurable else None

    @property
    def stderr(self) -> float | None:
        """Standard error of :attr:`value` (delta method on the ratio of the two averages)."""
        if not self.measurable:
            return None
        g, t, var_g, var_t, cov = self._moments()
        r = t / g
        var = (var_t - 2 * r * cov + r * r * var_g) / (g * g * self.effective_steps)
        return math.sqrt(max(var, 0.0))

    def lower_bound(self) -> float | None:
        """B_simple is above this (|G|^2 at its average plus two standard errors), or None."""
        se = self.grad_sq_stderr
        upper_g = self.grad_sq / self.weight + _SIGNIFICANT * se if se is not None else 0.0
        if self.trace <= 0 or upper_g <= 0:
            return None
        return (self.trace / self.weight) / upper_g

    def not_measurable_reason(self) -> str:
        """Why there is no value yet, and what would give one (for logs and metrics.json)."""
        if self.steps < 2:
            return (f"B_simple is not measurable yet: {self.steps} measured step(s); it needs "
                    "at least 2 (a longer run, or a smaller trainer.log_every)")
        g, t, var_g, _, _ = self._moments()
        if t <= 0 and g > _SIGNIFICANT * self.grad_sq_stderr:
            b, big = self.batch_sizes
            return (f"B_simple is not measurable yet after {self.steps} steps: the tr(Sigma) "
                    f"average ({t:.3g}) is not above 0, so B_simple is far below the batch "
                    f"sizes compared ({b} vs {big}); compare smaller micro-batches (a larger "
                    "trainer.accumulate) to resolve it")
        window = (1 + self.decay) / (1 - self.decay)
        lower = self.lower_bound()
        head = (f"B_simple is not measurable yet after {self.steps} steps: the |G|^2 average "
                f"({g:.3g} ± {self.grad_sq_stderr:.3g}) is not clearly above 0"
                + (f" (B_simple is probably above {lower:,.0f})" if lower else ""))
        if g > 0:
            needed = (_SIGNIFICANT**2) * var_g / (g * g)  # effective steps for g > 2 se
            if needed <= 0.9 * window:
                more = max(math.ceil(needed - self.effective_steps), 1)
                return f"{head}; about {more} more steps would make it so"
            decay = min((needed - 1) / (needed + 1), 0.9999)
            return (f"{head}; trainer.noise_scale_ema={decay:.4g} (an average over about "
                    f"{needed:,.0f} steps) or a larger trainer.accumulate would make it so")
        return (f"{head}: the gradient is mostly noise at this batch size; average over more "
                "steps (trainer.noise_scale_ema closer to 1) or use larger micro-batches")

    def describe(self, global_batch: int) -> str:
        """The end-of-run line."""
        if not self.measurable:
            return self.not_measurable_reason()
        return (f"gradient noise scale B_simple = {self.value:,.0f} ± {self.stderr:,.0f} "
                f"(standard error over about {self.effective_steps:.0f} steps): the estimated "
                f"critical batch size (McCandlish et al. 2018); this run's global batch is "
                f"{global_batch}")

    def state_dict(self) -> dict:
        return {"grad_sq": self.grad_sq, "trace": self.trace, "steps": self.steps,
                "grad_sq_sq": self.grad_sq_sq, "trace_sq": self.trace_sq, "cross": self.cross,
                "weight": self.weight, "weight_sq": self.weight_sq}

    def load_state_dict(self, state: dict) -> None:
        self.grad_sq = state.get("grad_sq", 0.0)
        self.trace = state.get("trace", 0.0)
        self.steps = state.get("steps", 0)
        self.grad_sq_sq = state.get("grad_sq_sq", 0.0)
        self.trace_sq = state.get("trace_sq", 0.0)
        self.cross = state.get("cross", 0.0)
        # A checkpoint from before the uncertainty was kept: its weights follow from the steps.
        d, n = self.decay, self.steps
        self.weight = state.get("weight", 1 - d**n)
        self.weight_sq = state.get("weight_sq", (1 - d) ** 2 * (1 - d ** (2 * n)) / (1 - d * d))


def plan_noise_scale(loop, backend) -> tuple[NoiseScale | None, int]:
    """Whether this run estimates B_simple, and how many micro-batches each step then takes."""
    k = loop.accumulate
    if loop.noise_scale == "never":
        return None, k
    # Free where the two batch sizes exist anyway: the micro-batches against the step.
    if k >= 2:
        return NoiseScale(loop.noise_scale_ema), k
    if loop.noise_scale == "auto":
        return None, k
    # always: each worker's own gradient against the averaged one (parameter hooks:
    # measurable on small models, see bench/scaling.py), or two micro-batches in one process.
    if backend.world_size > 1:
        return NoiseScale(loop.noise_scale_ema), k
    if not backend.can_split_steps:
        raise UserError(
            "trainer.noise_scale=always with one Horovod worker needs two micro-batches per "
            "step (Horovod all-reduces after trainer.accumulate backward passes): add "
            "trainer.accumulate=2"
        )
    return NoiseScale(loop.noise_scale_ema), 2


def not_measured_reason(loop) -> str:
    """Why a run with this ``trainer`` config has no B_simple estimate at all."""
    if loop.noise_scale == "never":
        return "not measured: trainer.noise_scale=never"
    return ("not measured: trainer.noise_scale=auto measures B_simple only where it needs no "
            "extra backward pass (trainer.accumulate >= 2); set trainer.noise_scale=always to "
            "measure it")


class MicroBatchNorms:
    """The squared norm of each backward pass's own gradient, on this worker, per group.

    A tensor hook on each trainable parameter sees that parameter's gradient of the current
    backward before it is accumulated into ``.grad``, hence before DDP's reducer or Horovod's
    hook (both run after accumulation) all-reduce it: a micro-batch's own, local gradient on
    any backend. The hooks run on the autograd thread, in order, and cost one reduction per
    parameter; a hook that finds itself in another backward pass than the last one (its
    graph task) closes the last one's sum, so the step never has to say where a backward
    ends. (A DDP comm hook could do the same per bucket, but a Python comm hook turns a dead
    peer into an abort instead of a clean error.)

    ``groups``: lists of parameters whose norms are kept apart (the optimizer's parameter
    groups, for AdaScale's gain per group; None: one group of every parameter); each backward
    gives one norm per group. B_simple and AdaScale share one instance per model
    (:func:`micro_batch_norms`): every reader of a step gets the same norms, and the hooks
    run once.
    """

    def __init__(self, model: torch.nn.Module, groups: list[list] | None = None) -> None:
        self.model = model
        self.groups = groups if groups is not None else [list(model.parameters())]
        self.handles: list = []
        self.parts: list[tuple[int, torch.Tensor]] = []
        self.norms: list[torch.Tensor] = []
        self.backward = -1  # the graph task the parts belong to
        # The step the last take() and averaged() answered, and their answers.
        self.taken_step: object = None
        self.taken: list[torch.Tensor] = []
        self.big_step: object = None
        self.big: torch.Tensor | None = None
        self.watch()

    def key(self) -> list[list[int]]:
        return [[id(p) for p in params] for params in self.groups]

    def watch(self) -> None:
        """Hook the parameters that train now (again after trainer.stages changes them)."""
        self.remove()
        self.handles = [p.register_hook(functools.partial(self._record, i))
                        for i, params in enumerate(self.groups) for p in params
                        if p.requires_grad]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def _record(self, group: int, grad: torch.Tensor) -> None:
        backward = graph_task_id()
        if backward != self.backward:
            self._close()
            self.backward = backward
        # The norm alone here (one kernel per parameter per backward); squared and summed in
        # float64 once per backward, in _close.
        self.parts.append((group, _norm(grad)))

    def _close(self) -> None:
        """The parts so far are one backward pass's: their sums per group join this step's
        list."""
        if not self.parts:
            return
        groups, norms = zip(*self.parts, strict=True)
        squares = torch.stack(norms).double().square()
        if len(self.groups) == 1:
            sums = squares.sum().unsqueeze(0)
        else:
            index = torch.tensor(groups, device=squares.device)
            sums = squares.new_zeros(len(self.groups)).index_add_(0, index, squares)
        self.norms.append(sums)
        self.parts = []

    def take(self, step: object = None) -> list[torch.Tensor]:
        """This step's per-backward squared norms (device tensors, one entry per group);
        starts the next step. A second call with the same ``step`` (another reader of the
        same step) gets the same norms."""
        if step is not None and step == self.taken_step:
            return self.taken
        self._close()
        self.backward = -1
        self.taken, self.norms, self.taken_step = self.norms, [], step
        return self.taken

    def averaged(self, step: object = None) -> torch.Tensor:
        """The squared norm of each group's ``.grad`` (after the step's all-reduce: the global
        batch's gradient), float64 on the gradients' device; computed once per ``step``."""
        if self.big is None or step is None or step != self.big_step:
            self.big = torch.stack([squared_norm(params) for params in self.groups])
            self.big_step = step
        return self.big


# One MicroBatchNorms per model (B_simple and AdaScale read the same hooks).
_SHARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def micro_batch_norms(model: torch.nn.Module, groups: list[list]) -> MicroBatchNorms:
    """The model's hooks for these parameter groups, made on first use: a second reader (the
    B_simple estimate beside AdaScale) shares them, so each parameter's gradient is reduced
    once per backward."""
    norms = _SHARED.get(model)
    if norms is None or not norms.handles or norms.key() != [[id(p) for p in params]
                                                            for params in groups]:
        if norms is not None:
            norms.remove()
        norms = _SHARED[model] = MicroBatchNorms(model, groups)
    return norms


def grad_squared_norm(grad: torch.Tensor) -> torch.Tensor:
    """One gradient's squared L2 norm, a float64 scalar on its device: reduced in the
    gradient's own precision (float32 for half types, whose sums would lose digits), squared
    in float64 (no overflow). Casting the whole gradient to float64 first would cost about ten
    times the reduction on the CPU, once per parameter per micro-batch."""
    return _norm(grad).double().square()


def _norm(grad: torch.Tensor) -> torch.Tensor:
    dtype = torch.float32 if grad.dtype in (torch.float16, torch.bfloat16) else None
    return torch.linalg.vector_norm(grad.detach(), dtype=dtype)


def squared_norm(params) -> torch.Tensor:
    """Sum of squared gradient entries over ``params``, in float64, on their device."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), dtype=torch.float64)
    return torch.stack([grad_squared_norm(g) for g in grads]).sum()
