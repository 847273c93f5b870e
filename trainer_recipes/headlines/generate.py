"""``trainer-generate CHECKPOINT "seed text"``: continue a headline word by word.

Strategies: ``greedy`` (the most likely next word), ``sample`` (from the softmax at
``--temperature``, optionally only the ``--top-k`` most likely words) and ``beam`` (keep the
``--beam-width`` prefixes with the highest total log-probability; return the best). Only real
vocabulary words are produced (never padding or the OOV token). The output is the seed text
plus the new words, title-cased as the seed notebook printed it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from trainer_recipes.headlines.tokenizer import OOV, Tokenizer

log = logging.getLogger(__name__)


@torch.no_grad()
def next_log_probs(model: torch.nn.Module, ids: list[int], max_len: int,
                   banned: list[int]) -> torch.Tensor:
    """log P(next word | ids) over the vocabulary, banned indices at -inf."""
    prefix = ids[-(max_len - 1):]
    x = torch.tensor([[0] * (max_len - 1 - len(prefix)) + prefix])
    logits = model(x.to(next(model.parameters()).device))[0].float().cpu()
    logits[banned] = -float("inf")
    return torch.log_softmax(logits, dim=0)


def beam_search(model: torch.nn.Module, ids: list[int], max_len: int, words: int, width: int,
                banned: list[int]) -> list[tuple[list[int], float]]:
    """The final beams (new word ids, total log-probability), best first."""
    beams: list[tuple[list[int], float]] = [([], 0.0)]
    for _ in range(words):
        candidates = []
        for new, score in beams:
            logp = next_log_probs(model, ids + new, max_len, banned)
            top = torch.topk(logp, min(width, int(torch.isfinite(logp).sum())))
            candidates += [(new + [i], score + float(v))
                           for v, i in zip(top.values, top.indices.tolist(), strict=True)]
        beams = sorted(candidates, key=lambda c: -c[1])[:width]
    return beams


def generate(model: torch.nn.Module, tokenizer: Tokenizer, max_len: int, seed_text: str,
             words: int = 10, strategy: str = "greedy", temperature: float = 1.0,
             top_k: int | None = None, beam_width: int = 3,
             generator: torch.Generator | None = None) -> str:
    """``seed_text`` followed by ``words`` generated words, title-cased."""
    if strategy not in ("greedy", "sample", "beam"):
        raise ValueError(f"strategy {strategy!r}: use greedy, sample or beam")
    if temperature <= 0 or (top_k is not None and top_k < 1) or beam_width < 1:
        raise ValueError("temperature must be > 0, top-k >= 1 and beam width >= 1")
    was_training = model.training
    model.eval()
    ids = tokenizer.encode(seed_text)
    oov = tokenizer.index.get(OOV)
    if not [i for i in ids if i != oov]:
        log.warning("the seed text %r has no word of the vocabulary; the model starts from "
                    "an empty prefix", seed_text)
    banned = [0] + ([oov] if oov is not None else [])
    if strategy == "beam":
        new = beam_search(model, ids, max_len, words, beam_width, banned)[0][0]
    else:
        new = []
        for _ in range(words):
            logp = next_log_probs(model, ids + new, max_len, banned)
            if strategy == "greedy":
                new.append(int(logp.argmax()))
                continue
            logits = logp / temperature
            if top_k is not None and top_k < len(logits):
                cutoff = torch.topk(logits, top_k).values[-1]
                logits[logits < cutoff] = -float("inf")
            new.append(int(torch.multinomial(torch.softmax(logits, 0), 1, generator=generator)))
    model.train(was_training)
    return " ".join([seed_text.strip(), *tokenizer.decode(new)]).title()


def main(argv: list[str] | None = None) -> None:
    from omegaconf import OmegaConf

    from trainer.engine.build import build_model
    from trainer.engine.inference import load_trusted
    from trainer.errors import UserError
    from trainer.parallel.backends.base import Backend
    from trainer.tools.predict import add_checkpoint_options

    parser = argparse.ArgumentParser(prog="trainer-generate", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a checkpoint file or a run directory")
    parser.add_argument("seed_text")
    parser.add_argument("--words", type=int, default=10)
    parser.add_argument("--strategy", choices=("greedy", "sample", "beam"), default="greedy")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--beam-width", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="for --strategy sample")
    add_checkpoint_options(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="trainer-generate: warning: %(message)s")
    for flag, ok, need in (
        ("--words", args.words >= 1, "an integer >= 1"),
        ("--beam-width", args.beam_width >= 1, "an integer >= 1"),
        ("--top-k", args.top_k is None or args.top_k >= 1, "an integer >= 1"),
        ("--temperature", 0 < args.temperature < float("inf"), "a number > 0"),
    ):
        if not ok:
            value = getattr(args, flag[2:].replace("-", "_"))
            print(f"trainer-generate: error: {flag} {value} is invalid: use {need}",
                  file=sys.stderr)
            sys.exit(2)
    try:
        _, state = load_trusted(args.checkpoint, args.trust, args.last)
        vocab = state.get("data", {})
        if "index" not in vocab:
            raise UserError(f"{args.checkpoint} is not a headline-model checkpoint (no "
                            "vocabulary in it); train one with recipe=headlines")
        tokenizer = Tokenizer(vocab["index"])
        cfg = OmegaConf.create(state["config"])
        model = build_model(cfg.model, Backend(torch.device("cpu")), vocab_size=len(tokenizer))
        model.load_state_dict(state["model"])
        text = generate(model, tokenizer, vocab["max_len"], args.seed_text, args.words,
                        args.strategy, args.temperature, args.top_k, args.beam_width,
                        torch.Generator().manual_seed(args.seed))
    except (UserError, ValueError) as exc:
        print(f"trainer-generate: error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(text)


if __name__ == "__main__":
    main()
