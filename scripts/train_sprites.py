"""Train (or resume) Chrysalis' embedded 32x32 sprite model, then optionally export it.

    .venv/bin/python scripts/train_sprites.py --out runs/sprites32 --steps 6000 --max-minutes 68
    .venv/bin/python scripts/train_sprites.py --out runs/sprites32 --export agent/generate/shipped/sprites32

Re-running with the same ``--out`` resumes from ``checkpoint.pt`` (the checkpoint's config wins). Uses CUDA when
available, else the CPU with ``--threads`` threads.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.generate.sprites.training import CHECKPOINT_NAME, TrainConfig, train  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    d = TrainConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="run directory (checkpoint.pt, loss.jsonl)")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--channels", type=str, default=",".join(map(str, d.block_out_channels)))
    p.add_argument("--layers-per-block", type=int, default=d.layers_per_block)
    p.add_argument("--n-per-class", type=int, default=d.n_per_class)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--prediction-type", default=d.prediction_type, choices=["v_prediction", "epsilon", "sample"]
    )
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--max-minutes", type=float, default=None, help="stop (and checkpoint) after this long")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-train", action="store_true", help="only export")
    p.add_argument(
        "--export", type=Path, default=None, help="write the EMA model, manifest and model card here"
    )
    p.add_argument(
        "--card-guidance", type=float, default=1.0, help="guidance of the model card's sample grid"
    )
    a = p.parse_args(argv)

    torch.set_num_threads(a.threads)
    if not a.no_train:
        config = TrainConfig(
            steps=a.steps,
            batch_size=a.batch_size,
            lr=a.lr,
            block_out_channels=tuple(int(c) for c in a.channels.split(",")),
            layers_per_block=a.layers_per_block,
            n_per_class=a.n_per_class,
            seed=a.seed,
            prediction_type=a.prediction_type,
            checkpoint_every=a.checkpoint_every,
        )
        train(
            a.out,
            config,
            device=a.device,
            max_seconds=a.max_minutes * 60 if a.max_minutes else None,
            log=lambda m: print(m, flush=True),
        )
    if a.export is not None:
        from agent.generate.image.embedded import write_shipped_model
        from agent.generate.sprites.card import write_model_card

        facts = write_shipped_model(a.out / CHECKPOINT_NAME, a.export)
        write_model_card(a.export, guidance_scale=a.card_guidance)
        print(f"exported to {a.export} (with MODEL_CARD.md and samples.png): {facts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
