"""The run loop: train, evaluate, checkpoint, stop.

The hot path (one optimizer step) does no host synchronisation: each step's loss stays on the
device, and its outputs wait in the tally (trainer/engine/tally.py), until the next log line
(every ``trainer.log_every`` steps), when the losses are read in one go, checked for NaN/Inf
(naming the exact step that went bad), and they and the task's counts are added to the epoch's
sums. They are also flushed before every checkpoint, so a checkpoint is never written after a
non-finite loss. Nothing else happens per step that could happen less often: the step's cost
against a hand-written loop is measured by bench/overhead.py (docs/performance.md).
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

import torch

from trainer.engine.build import Run
from trainer.engine.clock import Stopwatch, process_age
from trainer.engine.collector import frozen_heap
from trainer.engine.evaluate import evaluate
from trainer.engine.first_batch import check_first_forward, explain_step_failure
from trainer.engine.preemption import Preemption
from trainer.engine.progress import Progress
from trainer.engine.step import train_step
from trainer.engine.tally import Tally
from trainer.errors import Preempted, UserError, add_context
from trainer.io.restore import restore
from trainer.tasks import sum_width, task_metrics


class Loop:
    """One call of :meth:`fit` trains a built :class:`Run` to the end and returns its metrics."""

    def __init__(self, run: Run) -> None:
        self.run = run
        loop = run.cfg.trainer
        self.total_steps = run.total_steps
        # Plain values: reading a DictConfig attribute costs tens of microseconds.
        self.log_every = loop.log_every
        # (step, loss, this worker's batch) not yet read back
        self.pending: list[tuple[int, torch.Tensor, int]] = []
        self.tally = Tally(run.task)
        self.clock = Stopwatch()
        self.last_eval: dict[str, float] = {}
        self.last_train: dict[str, float] = {}
        self.evaluated_step = self.saved_step = -1
        self.saved_clock = 0.0  # clock.total already added to progress.train_time_s
        self.epoch_seconds = 0.0
        self.preemption = Preemption(run.backend, loop.checkpoint_every_minutes)
        self.stopped_by = 0  # the signal every rank agreed to stop on
        self.stopping = False  # a stop asked for (run.request_stop), agreed by every rank
        self.asked_anywhere = False  # some rank had asked at the last flush (several ranks)
        self.saved_path = None

    @property
    def progress(self) -> Progress:
        return self.run.progress

    @property
    def train_seconds(self) -> float:
        """Training time of the whole run so far, across resumes."""
        return self.progress.train_time_s + self.clock.total - self.saved_clock

    def epochs_done(self) -> float:
        """Epochs of training so far (1.00: the first one ended)."""
        return self.run.loader.epochs_done(self.progress.epoch, self.progress.offset)

    def flush(self) -> float | None:
        """Read the pending steps' losses back; add them to the epoch sums; mean loss."""
        if not self.pending:
            return None
        # Averaged over workers: the logged loss is the global batch's, and a NaN on any
        # worker stops every worker at the same step. The steps kept their losses as they
        # came out of the graph (no kernel per step: see trainer/engine/tally.py). Components
        # with per-step values of their own (run.averaged) share the same all-reduce.
        backend, n = self.run.backend, len(self.pending)
        with torch.no_grad():
            parts = [torch.stack([loss for _, loss, _ in self.pending]).double()]
            users = []
            for component in self.run.averaged:
                values = component.to_average()
                if values is not None:
                    parts.append(values)
                    users.append((component, len(values)))
            several = backend.world_size > 1
            if several:  # and whether any rank's run asked to stop (see stop_agreed)
                parts.append(torch.tensor([float(bool(self.run.stop_reason))],
                                          dtype=torch.float64, device=parts[0].device))
            reduced = torch.cat(parts) if len(parts) > 1 else parts[0]
            if several:
                reduced = backend.all_reduce_sum(reduced) / backend.world_size
            values = reduced.tolist()  # the one host read
        if several:
            self.asked_anywhere = values.pop() > 0
        losses = values[:n]
        bad = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
        if bad is not None:
            raise UserError(
                f"loss is {losses[bad]} at step {self.pending[bad][0]}; training stopped and "
                "no checkpoint was written after it. Lower optimizer.lr, check the data, or "
                "resume from the last checkpoint"
            )
        start = n
        for component, size in users:
            component.averaged(values[start:start + size])
            start += size
        counts = self.tally.take().cpu().tolist()
        sizes = [batch for _, _, batch in self.pending]  # (the batch may change: data/memory.py)
        sums = self.progress.train_sums or [0.0] * sum_width(self.run.task)
        loss_sum = (sum(losses) * sizes[0] if min(sizes) == max(sizes)
                    else sum(loss * batch for loss, batch in zip(losses, sizes, strict=True)))
        added = [loss_sum, counts[0], sum(sizes), *counts[1:]]
        self.progress.train_sums = [a + b for a, b in zip(sums, added, strict=True)]
        self.pending.clear()
        return sum(losses) / n

    def train_metrics(self) -> dict[str, float]:
        """This epoch's training metrics so far (the task's), over all workers."""
        self.flush()
        width = sum_width(self.run.task)
        sums = torch.tensor(self.progress.train_sums or [0.0] * width, dtype=torch.float64)
        return task_metrics(self.run.task, self.run.backend.all_reduce_sum(sums).tolist())

    def check_replicas(self) -> None:
        """Every worker must hold the same weights; a drift means a rank-dependent update."""
        run = self.run
        if run.backend.world_size == 1:
            return
        # Plus buffers the model says must agree too (QAT's observers); BatchNorm statistics
        # may differ between workers by design (DDP broadcasts rank 0's before each forward).
        shared = getattr(run.model, "replicated_buffers", lambda: [])()
        with torch.no_grad():
            sums = [float(p.detach().double().sum())
                    for p in [*run.model.parameters(), *shared]]
        mine = hashlib.sha256(repr(sums).encode()).hexdigest()
        digests = run.backend.all_gather_object(mine)
        if len(set(digests)) > 1:
            raise UserError(
                f"replicas diverged by step {self.progress.step}: the workers' weights differ "
                f"(ranks {[r for r, d in enumerate(digests) if d != digests[0]]} vs rank 0); "
                "something in the update depends on the rank (noise, dropout outside the "
                "model, a custom op) — report it with the config"
            )

    def save(self) -> None:
        p = self.progress
        if self.saved_step == p.step:
            return
        self.flush()
        self.check_replicas()
        run = self.run
        p.train_time_s, self.saved_clock = self.train_seconds, self.clock.total
        # Every registered component (trainer.io.state) and the run's metadata.
        path = run.checkpointer.save(p.step, share=run.backend.on_primary)
        self.saved_step, self.saved_path = p.step, path
        self.preemption.saved()
        run.callbacks.on_checkpoint(run, path)

    def evaluate(self) -> None:
        """The evaluation during training: the validation split's metrics (``val/<name>``),
        or without one the training metrics of the epoch so far (``train/epoch_<name>``,
        logged at the epoch's end already); what early stopping and best.pt choose on."""
        run, p, logger = self.run, self.progress, self.run.logger
        self.flush()
        if run.data.val is not None:
            self.last_eval = evaluate(run, "val")
            logger.eval_scalars(self.last_eval, p.step, p.samples)
        else:
            train = self.train_metrics() if p.train_sums else self.last_train
            self.last_eval = {f"train/epoch_{k}": v for k, v in train.items()}
        self.evaluated_step = p.step
        p.history.append({
            "step": p.step, "epoch": self.epochs_done(), "samples": p.samples,
            "train_time_s": self.train_seconds, **self.last_eval,
        })
        logger.info(
            f"step {p.step} (epoch {self.epochs_done():.2f}): "
            + ", ".join(f"{k} {v:.4f}" for k, v in self.last_eval.items())
        )
        run.callbacks.on_eval_end(run, dict(self.last_eval))

    def test(self) -> dict[str, float]:
        """The test split's metrics of the final model (``test/<name>``), read once, at the
        end (none with trainer.test=false)."""
        if not self.run.cfg.trainer.get("test", True):
            return {}
        values = evaluate(self.run, "test")
        self.run.logger.eval_scalars(values, self.progress.step, self.progress.samples)
        return values

    def log_window(self, lr: float, window: tuple[int, float]) -> tuple[int, float]:
        """Log the steps since ``window`` = (samples, train seconds); return the new window."""
        p, logger = self.progress, self.run.logger
        mean_loss = self.flush()
        # The clock runs on through the log line: reading losses back, TensorBoard and the
        # console are part of training's cost, and samples/s counts them.
        seconds = self.clock.read() - window[1]
        sps = (p.samples - window[0]) / max(seconds, 1e-9)
        logged = {"train/loss": mean_loss, "train/lr": lr, "train/samples_per_sec": sps}
        logger.scalars(logged, p.step)
        self.run.callbacks.on_log(self.run, logged)
        notes = logger.take_notes()  # what the callbacks added to this line
        # Epochs done, as the evaluation lines count them ("epoch 1.00" = the first one ended).
        epoch = self.epochs_done()
        if not logger.shows_progress:
            logger.info(
                f"step {p.step}/{self.total_steps} epoch {epoch:.2f} loss {mean_loss:.4f} "
                f"lr {lr:.4g} {sps:,.0f} samples/s{notes}"
            )
        logger.advance(epoch, mean_loss, sps)
        return p.samples, self.clock.read()

    def train_epoch(self) -> None:
        """Run the current epoch from its saved position to its end (or the last step)."""
        run, p, clock = self.run, self.progress, self.clock
        run.loader.resize(run.epoch_batches[p.epoch])  # schedule=increase_batch grows it
        run.callbacks.on_epoch_start(run)  # (which may resize it too: the adaptive batch)
        window = (p.samples, clock.total)
        clock.start()
        loader = run.loader
        for batch in loader.epoch(p.epoch, offset=p.offset):
            run.schedule.apply(run.optimizer, p.step)
            run.callbacks.on_step_start(run)  # (which may set the lr too: trainer-lr-find)
            try:
                loss = train_step(run, batch, p.step, run.micro_batches_now, self.tally)
            except UserError:
                raise
            except Exception as exc:
                if (line := explain_step_failure(run, batch)) is not None:
                    raise line from None
                add_context(exc, f"in training step {p.step + 1} (epoch {p.epoch}, batch "
                                 f"{p.batch}) on rank {run.backend.rank}")
                raise
            self.pending.append((p.step + 1, loss, loader.batch_size))
            p.step += 1
            p.batch += 1
            p.offset += loader.global_batch_size
            p.samples += loader.global_batch_size
            run.callbacks.on_step_end(run)
            run.step_micro_batches = None
            logged = p.step % self.log_every == 0 or p.step == self.total_steps
            if logged:
                # The rate the step used (the first group's), read once per log line.
                window = self.log_window(run.optimizer.param_groups[0]["lr"], window)
            else:
                run.logger.advance(None, None, None)
            self.stopped_by, save_due, asked = self.preemption.poll(bool(run.stop_reason))
            eval_now, save_now = run.cadence.due(p.step)
            eval_now, save_now = eval_now and not self.stopped_by, save_now or save_due
            if eval_now or save_now:
                clock.stop()
                if eval_now:
                    self.evaluate()
                if save_now:
                    self.save()
                clock.start()
            # A stop asked for (early stopping, the LR finder, a user's callback) is agreed
            # where every rank is at the same step and a reduction runs anyway: a log line's
            # (flush), the preemption poll's, an evaluation; a rank that stopped alone would
            # leave the others in a collective. (One process: at once, from the poll.)
            if (asked or self.asked_anywhere or eval_now) and self.stop_agreed():
                self.stopping = True
                break
            if p.step >= self.total_steps or self.stopped_by or run.finished:
                break
        clock.stop()

    def stop_agreed(self) -> bool:
        """Whether any rank's run asked to stop, the same answer on every rank (which then
        all hold the reason it gave); one small all-reduce where there are several."""
        run = self.run
        if run.backend.world_size == 1:
            return bool(run.stop_reason)
        flag = torch.tensor([float(bool(run.stop_reason))], dtype=torch.float64,
                            device=run.backend.device)
        if run.backend.all_reduce_sum(flag).item() == 0:
            return False
        run.stop_reason = next(r for r in run.backend.all_gather_object(run.stop_reason) if r)
        return True

    def end_epoch(self) -> None:
        p, logger = self.progress, self.run.logger
        self.last_train = self.train_metrics()
        logger.scalars({f"train/epoch_{k}": v for k, v in self.last_train.items()}, p.step)
        logger.scalars({"time/epoch_s": self.epoch_seconds}, p.step)
        p.epoch, p.batch, p.offset, p.train_sums = p.epoch + 1, 0, 0, []
        if self.run.cadence.eval_at_epoch_end:
            self.evaluate()
        self.save()

    def fit(self) -> dict[str, Any]:
        self.preemption.install()
        try:
            with frozen_heap():
                return self._fit()
        except (UserError, Preempted):
            raise
        except Exception as exc:  # the user's own code raised: say where, and what is kept
            if not any(where.startswith("in training step")
                       for where in getattr(exc, "trainer_where", ())):
                add_context(exc, f"after step {self.progress.step} on rank "
                                 f"{self.run.backend.rank}")
            last = self.saved_path or self.run.resumed_from
            add_context(exc, f"the last checkpoint is {last} (trainer.resume=auto continues "
                             "from it)" if last else "no checkpoint was written yet")
            raise
        finally:
            self.preemption.uninstall()

    def stop_on_signal(self) -> None:
        """Checkpoint the step every rank stopped after, say so, and end the run."""
        self.run.logger.close_progress()
        self.save()
        stopped = Preempted(self.stopped_by, self.progress.step, self.saved_path)
        self.run.logger.info(str(stopped))
        raise stopped

    def _fit(self) -> dict[str, Any]:
        started = time.perf_counter()
        restore(self.run)
        run, p, logger = self.run, self.progress, self.run.logger
        first_samples = p.samples
        if run.resumed_from is not None:
            self.saved_step = p.step
        logger.start(run.data.description, run.resumed_from, p.step)
        # Which rows choose the model; the test split is read once, at the end.
        logger.info(f"validation: {getattr(run.data, 'val_source', 'none')}")
        if left_out := run.loader.left_out():
            logger.info(f"data: {left_out}")
        run.callbacks.on_fit_start(run)
        run.checkpointer.check("callbacks")  # a state no checkpoint could load: say it now
        logger.open_progress(self.total_steps, p.step)
        run.train_model.train()
        check_first_forward(run)  # the model's output and the targets, against the task
        # Process start to the first step: what every job of a sweep pays before training.
        startup_s = process_age()
        while p.step < self.total_steps and not self.stopping and not run.finished:
            before = self.clock.total
            self.train_epoch()
            self.epoch_seconds = self.clock.total - before
            if self.stopped_by:
                self.stop_on_signal()
            if run.loader.epoch_done(p.offset):
                self.end_epoch()
                self.stopping = self.stopping or self.stop_agreed()
        logger.close_progress()
        if self.stopping:
            logger.info(run.stop_reason)
        self.flush()
        if p.train_sums:  # the run ended mid-epoch
            self.last_train = self.train_metrics()
        if self.evaluated_step != p.step:
            self.evaluate()
        self.save()
        tested = self.test()
        # None (null in JSON) where the task has no such metric, e.g. accuracy in regression.
        metrics = {
            "test_accuracy": tested.get("test/accuracy"),
            "test_loss": tested.get("test/loss"),
            "train_loss": self.last_train.get("loss"),
            "train_accuracy": self.last_train.get("accuracy"),
            "samples_per_sec": (p.samples - first_samples) / max(self.clock.total, 1e-9),
            "steps": p.step,
            "epochs": self.epochs_done(),
            "epoch_time_s": self.epoch_seconds,
            "wall_time_s": time.perf_counter() - started,
            "startup_s": startup_s,
            "train_time_s": self.train_seconds,
            "history": p.history,
            "world_size": run.backend.world_size,
            "global_batch_size": run.epoch_batches[0],  # at the start
            "final_global_batch_size": run.loader.global_batch_size,
            "stopped_early": self.stopping,
            "resumed_from": str(run.resumed_from) if run.resumed_from else None,
        }
        if not tested:  # (trainer.test=false: the test split is not read)
            metrics = {k: v for k, v in metrics.items() if not k.startswith("test_")}
        # The task's own metrics beyond loss and accuracy (perplexity) as test_<name>, and
        # the final model's validation metrics as val_<name>.
        metrics.update({f"test_{k[5:]}": v for k, v in tested.items()
                        if k not in ("test/loss", "test/accuracy")})
        metrics.update({k.replace("/", "_"): v for k, v in self.last_eval.items()
                        if k.startswith("val/")})
        run.callbacks.on_fit_end(run, metrics)  # callbacks may add entries (B_simple)
        logger.finish(metrics)
        logger.summary(metrics, self.saved_path)
        return metrics


def fit(run: Run) -> dict[str, Any]:
    """Train until ``trainer.epochs`` / ``trainer.max_steps`` or early stop; return metrics."""
    return Loop(run).fit()
