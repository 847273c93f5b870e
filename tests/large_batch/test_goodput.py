"""Goodput (trainer/large_batch/goodput.py): the throughput model's fit, the efficiency and
the choice of batch with its hysteresis."""

from __future__ import annotations

import pytest

from trainer.large_batch.adascale import AdaScale
from trainer.large_batch.goodput import (
    StepShape,
    ThroughputModel,
    candidates,
    choose,
    efficiency,
    goodput,
    step_shape,
)

TRUE = ThroughputModel(alpha=2e-4, beta=2e-5, sync=1e-3)


def test_a_batch_that_does_not_fit_a_micro_batch_is_accumulated():
    assert step_shape(1024, 2, 256) == StepShape(256, 2, 2)
    assert step_shape(1000, 2, 256) == StepShape(250, 2, 2)  # the fewest that fit
    assert step_shape(64, 1, None) == StepShape(64, 1, 1)
    assert step_shape(64, 1, None, min_micro_batches=2) == StepShape(32, 2, 1)
    assert step_shape(1024, 2, 256).global_batch == 1024


def test_the_fit_recovers_the_step_time_model_and_predicts_other_batches():
    # Measured at three sizes (one with accumulation); predicted at sizes never run.
    seen = [step_shape(b, 2, 512) for b in (64, 256, 2048)]
    model = ThroughputModel.fit([(s, TRUE.seconds(s)) for s in seen])
    assert (model.alpha, model.beta, model.sync) == pytest.approx(
        (TRUE.alpha, TRUE.beta, TRUE.sync), rel=1e-9)
    for batch in (32, 128, 4096):
        shape = step_shape(batch, 2, 512)
        assert model.samples_per_second(shape) == pytest.approx(
            TRUE.samples_per_second(shape), rel=1e-9)


def test_the_fit_keeps_coefficients_non_negative():
    # Timings that fall with the batch (noise at two sizes): no negative cost per sample.
    model = ThroughputModel.fit([(StepShape(32, 1, 1), 0.010), (StepShape(64, 1, 1), 0.009)])
    assert min(model.alpha, model.beta, model.sync) >= 0.0
    with pytest.raises(ValueError, match="no step times"):
        ThroughputModel.fit([])


def test_efficiency_is_adascales_gain_over_s():
    # r = S x (B + M0) / (B + M): the controller's efficiency is the progress AdaScale credits.
    for noise_scale in (10.0, 400.0, 1e5):
        adascale = AdaScale(64, 512, groups=1)
        adascale.measured = True
        # |G|^2 = 1 and tr(Sigma) = B: the expected squared norms at batches 1 and 2.
        adascale.total.fold(1.0 + noise_scale, 1.0 + noise_scale / 2, 1, 2)
        g, t = adascale.total.means()
        assert t / g == pytest.approx(noise_scale)
        assert adascale._gain(adascale.total) == pytest.approx(
            8 * efficiency(512, 64, noise_scale))
    assert efficiency(64, 64, 123.0) == 1.0


def test_candidates_are_multiples_of_the_quantum_within_the_bounds():
    options = candidates(100, 4096, 48)
    assert all(b % 48 == 0 and 96 <= b <= 4096 for b in options)
    assert options[0] == 144 and options[-1] == 4080 and options == sorted(set(options))
    assert candidates(100, 40, 8) == []


def _shape(batch: int) -> StepShape:
    return step_shape(batch, 1, 512)


def test_the_choice_follows_the_noise_scale_and_waits_for_a_clear_gain():
    options = candidates(64, 4096, 64)
    small_noise = choose(TRUE, 64, options, 64, noise_scale=20.0, shape_of=_shape,
                         threshold=0.05)
    large_noise = choose(TRUE, 64, options, 64, noise_scale=5000.0, shape_of=_shape,
                         threshold=0.05)
    # Goodput's own argmax, computed directly: a noisier gradient buys a larger batch.
    for choice, noise_scale in ((small_noise, 20.0), (large_noise, 5000.0)):
        best = max(options, key=lambda b, n=noise_scale: goodput(TRUE, _shape(b), 64, n))
        assert choice.batch == best
    assert small_noise.batch < large_noise.batch and large_noise.change
    # At the best batch already, or a gain under the threshold: no change.
    stay = choose(TRUE, large_noise.batch, options, 64, 5000.0, _shape, 0.05)
    assert not stay.change and stay.gain == pytest.approx(1.0)
    near = options[options.index(large_noise.batch) - 1]
    nearby = choose(TRUE, near, options, 64, 5000.0, _shape, threshold=0.5)
    assert nearby.batch == large_noise.batch and not nearby.change


def test_a_batch_plan_answers_the_batch_at_any_sample_and_round_trips(tmp_path):
    from trainer.errors import UserError
    from trainer.large_batch.batch_plan import BatchPlan, Decision

    plan = BatchPlan(128, [Decision(samples=12_800, new=256, old=128, step=100,
                                    predicted_gain=1.2, noise_scale=900.0,
                                    model=TRUE.state_dict())])
    plan.record(Decision(samples=38_400, new=512, old=256))
    assert [plan.batch_at(s) for s in (0, 12_799, 12_800, 38_399, 38_400, 10**9)] == [
        128, 128, 256, 256, 512, 512]
    with pytest.raises(ValueError, match="comes after"):
        plan.record(Decision(samples=38_000, new=1024))
    # A second decision at the same point replaces the first (a resume on other workers
    # re-quantising the batch a decision had just set).
    plan.record(Decision(samples=38_400, new=384, old=256))
    assert len(plan.decisions) == 2 and plan.batch_at(10**9) == 384
    plan.write(tmp_path / "batch_plan.json")
    again = BatchPlan.read(tmp_path / "batch_plan.json")
    assert again.state_dict() == plan.state_dict()
    (tmp_path / "bad.json").write_text('{"initial": 64}')
    with pytest.raises(UserError, match=r"bad.json is not a batch plan \('decisions'\)"):
        BatchPlan.read(tmp_path / "bad.json")
    with pytest.raises(UserError, match="no such file"):
        BatchPlan.read(tmp_path / "missing.json")
