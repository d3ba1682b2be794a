"""LoRA fine-tuning of the lore model (any causal LM) on a project's own traits -> lore pairs.

Training text: each pair becomes the production lore writer's own prompt
(:func:`agent.generate.lore.prompt.render_prompt` of :func:`~agent.generate.lore.prompt.build_messages` for the
pair's traits, no facts, so the user turn reads ``Facts: nothing unusual.``) followed by the lore and the
end-of-turn token (``<|im_end|>`` when the tokenizer has it, else its EOS). Prompt and lore are tokenized
separately (``add_special_tokens=False``, as the writer tokenizes prompts) and concatenated, so the loss covers
exactly the lore tokens and the end-of-turn token; the prompt is masked out (-100).

Adapter: peft ``LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0, target_modules=q/k/v/o_proj)`` on the
attention projections, AdamW (weight decay 0, constant learning rate, gradients clipped to norm 1) on the LoRA
parameters only. The model runs in eval mode (no dropout anywhere).

Output: a MERGED model directory (``merge_and_unload`` then ``save_pretrained`` + the tokenizer), because the
production lore backend (:class:`agent.generate.lore.transformers.TransformersLoreWriter`) has no adapter setting:
``models.lore_backend = "transformers"`` with ``models.lore_model = "<out_dir>"`` loads it as is, and its receipts
name it by the merged weights' digest. The cost is a full copy of the base weights (float32).

Guarantees:

- Determinism: on the CPU (float32, one torch thread for the run, restored after) the same dataset, base,
  hyperparameters and seed give the same bytes in every file of ``out_dir``. The only random draws are the LoRA
  init (peft's, from the global RNG, run inside ``torch.random.fork_rng()`` right after ``torch.manual_seed(seed)``:
  seeded, and the caller's RNG is untouched) and the data order (per-epoch ``torch.randperm`` from CPU generators
  seeded by ``(seed, epoch)``, :func:`agent.training.diffusers_lora.step_indices`). On a GPU the run is seeded the
  same way but its float bits differ; its result is not the canonical one.
- Resume: as :mod:`agent.training.diffusers_lora`: ``out_dir/.checkpoint/training-state`` every
  ``checkpoint_every`` steps and at the end; the same arguments resume to the same bytes; other arguments are
  refused with a hint.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.errors import ConfigError
from agent.training.diffusers_lora import (
    CHECKPOINT_DIR,
    Progress,
    check_common,
    data_order_sha256,
    fingerprint,
    optimize_and_record,
    run_device,
    start_or_resume,
    step_indices,
)
from agent.training.result import TrainResult

if TYPE_CHECKING:
    import torch

TRAINER = "lore-lora"
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
"""The attention projections of Llama-style causal LMs (SmolLM2, Qwen, Mistral, ...)."""
IGNORE = -100


def training_prompt(tokenizer: Any, traits: dict[str, str]) -> str:
    """The production writer's prompt for ``traits`` (no facts): what the model sees before the lore it learns."""
    from agent.generate.base import LoreRequest
    from agent.generate.lore.prompt import build_messages, render_prompt

    return render_prompt(tokenizer, build_messages(LoreRequest("lore", 1, dict(traits), {}, 0)))


def _end_of_turn(tokenizer: Any) -> int:
    vocab = tokenizer.get_vocab()
    if "<|im_end|>" in vocab:
        return int(vocab["<|im_end|>"])
    if tokenizer.eos_token_id is None:
        raise ConfigError(
            "the lore model's tokenizer has neither <|im_end|> nor an EOS token",
            hint="use a chat model whose tokenizer defines eos_token",
        )
    return int(tokenizer.eos_token_id)


def encode_pairs(tokenizer: Any, items: list[Any], max_length: int) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per item: the prompt masked with -100, then the lore and the end-of-turn token."""
    eot = _end_of_turn(tokenizer)
    out = []
    for it in items:
        if not it.traits or not it.lore:
            raise ConfigError(
                f"dataset item {it.name} has no traits or no lore",
                hint='write each lore.jsonl line as {"traits": {...}, "lore": "..."}',
            )
        prompt = tokenizer(training_prompt(tokenizer, it.traits), add_special_tokens=False)["input_ids"]
        lore = tokenizer(str(it.lore).strip(), add_special_tokens=False)["input_ids"] + [eot]
        if len(prompt) >= max_length:
            raise ConfigError(
                f"{it.name}: the prompt alone is {len(prompt)} tokens, not under max_length={max_length}",
                hint=f"raise max_length above {len(prompt) + 64}",
            )
        lore = lore[: max_length - len(prompt)]
        out.append((list(prompt) + lore, [IGNORE] * len(prompt) + lore))
    return out


def _batch(encoded: list[tuple[list[int], list[int]]], idx: list[int], pad_id: int) -> dict[str, Any]:
    import torch

    rows = [encoded[i] for i in idx]
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (x, y) in enumerate(rows):  # right padding: positions of real tokens start at 0, as in the writer
        ids[r, : len(x)] = torch.tensor(x)
        labels[r, : len(y)] = torch.tensor(y)
        mask[r, : len(x)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _load_base(base: Path) -> tuple[Any, Any, Path]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agent.generate.lore.transformers import check_causal_lm_dir
    from agent.generate.runtime import resolve_model_source

    path = resolve_model_source(str(base), what="base lore model", setting="--base")
    arch = check_causal_lm_dir(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(
            f"could not load a causal LM ({arch}) from {path}: {e}",
            hint="point --base at a directory holding the model *and* its tokenizer files",
        ) from e
    return model, tokenizer, path


def train_lore_lora(
    dataset: Any,
    base: Path,
    out_dir: Path,
    *,
    rank: int = 8,
    alpha: int = 16,
    lr: float = 2e-4,
    steps: int,
    batch_size: int = 4,
    seed: int,
    checkpoint_every: int = 50,
    max_length: int = 384,
    device: str = "auto",
    progress: Progress | None = None,
) -> TrainResult:
    """Train a LoRA on ``base`` from a lore dataset and write the merged model to ``out_dir``.

    Args:
        dataset: An :class:`agent.datasets.Dataset` of kind ``lore`` (``lore.jsonl``).
        base: The causal LM directory (or cached hub id) to adapt, with its tokenizer.
        out_dir: Where the merged model (and ``.checkpoint/``) go.
        rank, alpha: LoRA rank and alpha (scale = alpha / rank).
        lr: AdamW learning rate (constant).
        steps: Optimizer steps in all; one epoch is ``ceil(len(items) / batch_size)`` steps.
        batch_size: Pairs per step.
        seed: The run's seed (LoRA init and data order).
        checkpoint_every: Steps between checkpoints.
        max_length: Most tokens per example (prompt + lore); longer lore is cut.
        device: ``auto`` (CUDA/MPS when present), ``cpu`` (canonical) or an explicit device.
        progress: Called after every step with ``(step, steps, loss)``.
    """
    from agent.generate.runtime import torch_threads

    check_common(
        steps=steps, batch_size=batch_size, seed=seed, checkpoint_every=checkpoint_every, lr=lr, rank=rank,
        alpha=alpha,
    )  # fmt: skip
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 16:
        raise ConfigError(f"max_length={max_length!r}", hint="use at least 256 tokens (prompt + lore)")
    if getattr(dataset, "kind", None) != "lore":
        raise ConfigError(
            f"{getattr(dataset, 'path', dataset)} is a {getattr(dataset, 'kind', '?')} dataset; lore training needs "
            "a lore dataset (lore.jsonl)",
            hint='pass a folder with lore.jsonl: {"traits": {...}, "lore": "..."} per line',
        )
    items = list(dataset.items)
    dev = run_device(device)
    with torch_threads(1 if dev.type == "cpu" else None):
        return _train(
            items,
            Path(base),
            Path(out_dir),
            rank,
            alpha,
            lr,
            steps,
            batch_size,
            seed,
            checkpoint_every,
            max_length,
            dev,
            progress,
        )


def _train(
    items: list[Any],
    base: Path,
    out_dir: Path,
    rank: int,
    alpha: int,
    lr: float,
    steps: int,
    batch_size: int,
    seed: int,
    checkpoint_every: int,
    max_length: int,
    dev: torch.device,
    progress: Progress | None,
) -> TrainResult:
    import torch
    from peft import LoraConfig, get_peft_model

    from agent.generate.runtime import weight_files, weights_digest
    from agent.training.diffusers_lora import files_sha256

    model, tokenizer, base_path = _load_base(base)
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in TARGET_MODULES if t in present]
    if not targets:
        raise ConfigError(
            f"{base_path} has none of the attention projections {', '.join(TARGET_MODULES)}",
            hint="use a Llama-style causal LM (SmolLM2, Qwen2, Mistral, ...) as --base",
        )
    hyper = {
        "rank": rank,
        "alpha": alpha,
        "lr": lr,
        "batch_size": batch_size,
        "max_length": max_length,
        "target_modules": targets,
        "lora_dropout": 0.0,
        "optimizer": "AdamW(betas=(0.9, 0.999), weight_decay=0.0, eps=1e-8), constant lr, grad clip 1.0",
        "prompt": "agent.generate.lore.prompt.build_messages(traits, facts={}) + render_prompt",
        "output": "merged model (merge_and_unload + save_pretrained)",
        "base_weights_sha256": weights_digest(weight_files(base_path)),
        "device": dev.type,
        "dtype": "float32",
    }
    fp = fingerprint(
        {
            "trainer": TRAINER,
            "seed": seed,
            "hyperparameters": hyper,
            "dataset": [[it.index, it.name, it.sha256] for it in items],
        }
    )
    encoded = encode_pairs(tokenizer, items, max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else _end_of_turn(tokenizer)

    model.requires_grad_(False)
    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM"
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed % 2**63)
        peft_model = get_peft_model(model, config)
    peft_model.to(dev).eval()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=0.0, eps=1e-8)

    ck = start_or_resume(out_dir, fp, steps, module=peft_model, optimizer=optimizer)
    while ck.step < steps:
        t0 = time.monotonic()
        idx = step_indices(len(items), batch_size, seed, ck.step)
        batch = {k: v.to(dev) for k, v in _batch(encoded, idx, pad_id).items()}
        loss = peft_model(**batch).loss
        optimize_and_record(
            ck,
            loss,
            optimizer,
            params,
            idx,
            t0,
            module=peft_model,
            out_dir=out_dir,
            steps=steps,
            checkpoint_every=checkpoint_every,
            progress=progress,
        )

    merged: Any = peft_model.merge_and_unload()
    merged.to("cpu")
    merged.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    written = sorted(
        p.relative_to(out_dir).as_posix()
        for p in out_dir.rglob("*")
        if p.is_file() and CHECKPOINT_DIR not in p.relative_to(out_dir).parts
    )
    return TrainResult(
        trainer=TRAINER,
        hyperparameters=hyper,
        seed=seed,
        steps=ck.step,
        losses=tuple(ck.losses),
        data_order_sha256=data_order_sha256(ck.orders),
        weights=files_sha256(out_dir, written),
        train_seconds=ck.train_seconds,
    )


__all__ = ["TARGET_MODULES", "TRAINER", "encode_pairs", "train_lore_lora", "training_prompt"]
