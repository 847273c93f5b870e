"""Sample predictions in TensorBoard after each evaluation (``logger.sample_predictions=N``):
the first N validation images (training images where the run has no validation split: the
test split is read once, at the end) with the predicted and the true class, or the texts a text
model writes. Every rank runs the forward (BatchNorm in eval mode, same weights); rank 0 writes."""

from __future__ import annotations

import torch

from trainer.callbacks import Callback


class SamplePredictions(Callback):
    def on_eval_end(self, run, metrics: dict[str, float]) -> None:
        log_sample_predictions(run)


@torch.no_grad()
def log_sample_predictions(run) -> None:
    """The first validation samples with their predicted and true classes, as an image grid
    (image data), and the data's generated texts (text data)."""
    split = run.data.val if run.data.val is not None else run.data.train
    count = min(run.cfg.logger.sample_predictions, len(split))
    if count == 0:
        return
    if run.logger.enabled:
        was_training = run.model.training
        run.model.eval()
        texts = run.data.sample_texts(run.model)
        run.model.train(was_training)
        if texts:
            run.logger.texts("val/samples", texts, run.progress.step)
    raw = next(split.stream([slice(0, count)]))
    if not (isinstance(raw, tuple | list) and len(raw) == 2
            and isinstance(raw[0], torch.Tensor)):
        return  # images come from (image, label) data; a dict batch draws none
    raw, targets = raw
    images = run.data.as_images(raw)
    if images is None:
        return
    was_training = run.model.training
    run.model.eval()
    predicted = run.task.predict(run.model(run.data.transform(raw))).tolist()
    run.model.train(was_training)
    names = run.data.class_names

    def name(index: int) -> str:
        return names[index] if 0 <= index < len(names) else str(index)

    run.logger.predictions(images, [name(p) for p in predicted],
                           [name(a) for a in targets.tolist()], run.progress.step)
