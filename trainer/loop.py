"""The run loop: train, evaluate, checkpoint, stop.

The hot path (one optimizer step) does no host synchronisation: losses stay on the device
and are checked for NaN/Inf once per ``trainer.log_every`` steps, which still names the exact
step that went bad, and always before a checkpoint is written.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from typing import Any

import torch
from omegaconf import OmegaConf

from trainer.build import Progress, Run, config_changes
from trainer.data.memory import eval_batches
from trainer.errors import UserError
from trainer.seeding import rng_state, set_rng_state


def restore(run: Run) -> None:
    """Load the resume checkpoint (if any) into the model, optimizer, schedule and RNGs."""
    state = run.resume_state
    if state is None:
        return
    changed = config_changes(state["config"], run.cfg)
    if changed:
        run.logger.warning(f"config differs from the checkpoint's in: {', '.join(changed)}")
    # Hyper-parameters come from the config, state (momentum, moments) from the checkpoint:
    # load_state_dict would otherwise bring back the saved lr, weight decay, betas...
    configured = [
        {k: v for k, v in group.items() if k != "params"} for group in run.optimizer.param_groups
    ]
    try:
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        for group, values in zip(run.optimizer.param_groups, configured, strict=True):
            group.update(values)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise UserError(
            f"checkpoint {run.resumed_from} does not fit this model/optimizer "
            f"({str(exc).splitlines()[0]}); resume with the config it was trained with"
        ) from None
    run.schedule.load_state_dict(state["schedule"])
    run.progress = Progress(**state["progress"])
    set_rng_state(state["rng"])
    run.resume_state = None  # free the copy


def checkpoint_state(run: Run, sums: torch.Tensor) -> dict[str, Any]:
    run.progress.train_sums = sums.tolist()
    return {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "schedule": run.schedule.state_dict(),
        "progress": asdict(run.progress),
        "rng": rng_state(),
        "config": OmegaConf.to_container(run.cfg, resolve=True),
    }


@torch.no_grad()
def evaluate(run: Run) -> dict[str, float]:
    """Task metrics over the whole test split, summed over workers."""
    model, task, data = run.train_model, run.task, run.data
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=run.device)
    batches = eval_batches(
        data.test, run.cfg.data.eval_batch_size, rank=run.backend.rank,
        world_size=run.backend.world_size, transform=data.transform,
    )
    for inputs, targets in batches:
        logits = model(inputs.to(run.device, non_blocking=True))
        targets = targets.to(run.device, non_blocking=True)
        sums += task.metric_sums(logits, targets, task.loss(logits, targets))
    model.train(was_training)
    metrics = task.metrics_from_sums(run.backend.all_reduce_sum(sums).cpu())
    return {f"eval/{name}": value for name, value in metrics.items()}


@torch.no_grad()
def log_sample_predictions(run: Run) -> None:
    count = min(run.cfg.logger.sample_predictions, len(run.data.test))
    if count == 0:
        return
    raw = run.data.test.inputs[:count]
    images = run.data.as_images(raw)
    if images is None:
        return
    was_training = run.model.training
    run.model.eval()
    predicted = run.task.predict(run.model(run.data.transform(raw.to(run.device)))).tolist()
    run.model.train(was_training)
    names = run.data.class_names
    actual = run.data.test.targets[:count].tolist()
    run.logger.predictions(
        images, [names[p] for p in predicted], [names[a] for a in actual], run.progress.step
    )


class _Stopwatch:
    """Training time only: paused around evaluation and checkpointing."""

    def __init__(self) -> None:
        self.total = 0.0
        self._since: float | None = None

    def start(self) -> None:
        self._since = time.perf_counter()

    def stop(self) -> float:
        if self._since is not None:
            self.total += time.perf_counter() - self._since
            self._since = None
        return self.total


def _check_finite(pending: list[tuple[int, torch.Tensor]]) -> float | None:
    """Mean of the pending losses; UserError naming the first step whose loss is NaN/Inf."""
    if not pending:
        return None
    losses = torch.stack([loss for _, loss in pending]).float().cpu()
    finite = torch.isfinite(losses)
    if not bool(finite.all()):
        step = pending[int((~finite).nonzero()[0])][0]
        raise UserError(
            f"loss is {losses[~finite][0].item()} at step {step}; training stopped and no "
            "checkpoint was written after it. Lower optimizer.lr, check the data, or resume "
            "from the last checkpoint"
        )
    pending.clear()
    return float(losses.mean())


def fit(run: Run) -> dict[str, Any]:
    """Train until ``trainer.epochs`` / ``trainer.max_steps`` or early stop; return metrics."""
    started = time.perf_counter()
    restore(run)
    loop, logger, p = run.cfg.trainer, run.logger, run.progress
    steps_per_epoch = len(run.loader)
    total_steps = steps_per_epoch * loop.epochs
    if loop.max_steps is not None:
        total_steps = min(total_steps, loop.max_steps)
    global_batch = run.loader.global_batch_size
    logger.start(run.data.description, run.resumed_from)
    logger.open_progress(total_steps, p.step)

    model, task, optimizer = run.train_model, run.task, run.optimizer
    sums = torch.tensor(p.train_sums or [0.0, 0.0, 0.0], dtype=torch.float64, device=run.device)
    pending: list[tuple[int, torch.Tensor]] = []
    clock = _Stopwatch()
    window = (p.step, 0.0)  # (step, train seconds) at the last log line
    epoch_clock = 0.0
    last_eval: dict[str, float] = {}
    last_train: dict[str, float] = {}
    saved_step = p.step if run.resumed_from is not None else -1
    first_step, evaluated_step = p.step, -1
    stop_reason = ""

    def save() -> None:
        nonlocal saved_step
        if saved_step == p.step:
            return
        _check_finite(pending)
        run.checkpointer.save(checkpoint_state(run, sums), p.step)
        saved_step = p.step

    def run_eval() -> None:
        nonlocal last_eval, stop_reason, evaluated_step
        _check_finite(pending)
        last_eval, evaluated_step = evaluate(run), p.step
        logger.scalars(last_eval, p.step)
        log_sample_predictions(run)
        logger.info(
            f"step {p.step} (epoch {p.step / steps_per_epoch:.2f}): "
            + ", ".join(f"{k} {v:.4f}" for k, v in last_eval.items())
        )
        if loop.early_stop:
            value = last_eval.get(loop.early_stop_metric)
            if value is None:
                raise UserError(
                    f"trainer.early_stop_metric={loop.early_stop_metric} is not an eval "
                    f"metric; use one of {', '.join(last_eval)}"
                )
            better = p.best is None or (
                value > p.best if loop.early_stop_mode == "max" else value < p.best
            )
            p.best, p.bad_evals = (value, 0) if better else (p.best, p.bad_evals + 1)
            if p.bad_evals >= loop.early_stop:
                stop_reason = (
                    f"early stop: {loop.early_stop_metric} has not improved for "
                    f"{p.bad_evals} evaluations (best {p.best:.4f})"
                )

    model.train()
    while p.step < total_steps and not stop_reason:
        clock.start()
        epoch_began = clock.total
        for inputs, targets in run.loader.epoch(p.epoch, start=p.batch):
            lr = run.schedule.apply(optimizer, p.step)
            logits = model(inputs)
            loss = task.loss(logits, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums += task.metric_sums(logits.detach(), targets, loss)
            p.step += 1
            p.batch += 1
            pending.append((p.step, loss.detach()))
            if p.step % loop.log_every == 0 or p.step == total_steps:
                mean_loss = _check_finite(pending)
                seconds = clock.stop() - window[1]
                sps = (p.step - window[0]) * global_batch / max(seconds, 1e-9)
                window = (p.step, clock.total)
                logger.scalars({"train/loss": mean_loss, "train/lr": lr,
                                "train/samples_per_sec": sps}, p.step)
                if not logger.shows_progress:
                    logger.info(f"step {p.step}/{total_steps} epoch {p.epoch} "
                                f"loss {mean_loss:.4f} lr {lr:.4g} {sps:,.0f} samples/s")
                logger.advance(p.epoch, mean_loss, sps)
                clock.start()
            else:
                logger.advance(p.epoch, None, None)
            pausing = (
                (loop.eval_every and p.step % loop.eval_every == 0)
                or (loop.checkpoint_every and p.step % loop.checkpoint_every == 0)
            )
            if pausing:
                clock.stop()
                if loop.eval_every and p.step % loop.eval_every == 0:
                    run_eval()
                if loop.checkpoint_every and p.step % loop.checkpoint_every == 0:
                    save()
                clock.start()
            if p.step >= total_steps or stop_reason:
                break
        clock.stop()
        if p.batch >= steps_per_epoch:  # the epoch is complete
            epoch_clock = clock.total - epoch_began
            _check_finite(pending)
            last_train = task.metrics_from_sums(run.backend.all_reduce_sum(sums.clone()).cpu())
            logger.scalars({f"train/epoch_{k}": v for k, v in last_train.items()}, p.step)
            logger.scalars({"time/epoch_s": epoch_clock}, p.step)
            p.epoch, p.batch = p.epoch + 1, 0
            sums.zero_()
            if not loop.eval_every:
                run_eval()
            save()

    logger.close_progress()
    _check_finite(pending)
    if stop_reason:
        logger.info(stop_reason)
    if evaluated_step != p.step:
        run_eval()
    save()
    if not last_train:
        if sums[-1] > 0:
            last_train = task.metrics_from_sums(run.backend.all_reduce_sum(sums.clone()).cpu())
        else:
            last_train = {"loss": math.nan}
    train_seconds = clock.total
    metrics = {
        "test_accuracy": last_eval.get("eval/accuracy", math.nan),
        "test_loss": last_eval.get("eval/loss", math.nan),
        "train_loss": last_train["loss"],
        "samples_per_sec": (p.step - first_step) * global_batch / max(train_seconds, 1e-9),
        "steps": p.step,
        "epochs": p.step / steps_per_epoch,
        "epoch_time_s": epoch_clock,
        "wall_time_s": time.perf_counter() - started,
        "world_size": run.backend.world_size,
        "global_batch_size": global_batch,
        "stopped_early": bool(stop_reason),
        "resumed_from": str(run.resumed_from) if run.resumed_from else None,
    }
    logger.finish(metrics)
    return metrics
