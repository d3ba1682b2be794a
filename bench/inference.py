"""Inference throughput: ``.venv/bin/python -m bench.inference``.

Tables (also written to bench/results/):

- inference_cpu: the embedded models on the CPU. Images/s of the sprite model and lore tokens/s of SmolLM2 at
  batch 1 and batched, with the process's peak RSS (each model runs in its own subprocess, so the peak is its own).
  Rows for the embedded image model appear once ``agent.generate.image.embedded`` is installed.
- inference_gpu: only with a CUDA device: a Stable-Diffusion-1.5-size architecture (UNet, VAE and text encoder
  from SD 1.5's configs, random weights) at 512 px, plain diffusers calls next to an optimised path (batching,
  channels_last, torch.compile, SDPA) in the same run. On a CPU-only machine this prints a note instead.

Options: ``--image-batches 1,8,16``, ``--lore-batches 1,8``, ``--lore-tokens 48``, ``--threads N``,
``--sd-steps 20``, ``--sd-smoke`` (run the GPU table's code on the CPU with tiny configs, to check it works).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

from bench._table import emit

TRAITS = [
    {"mood": m, "element": e}
    for m in ("serene", "radiant", "fierce", "gloomy")
    for e in ("fire", "water", "earth", "air")
]
FACTS = [{"season": "a cold season"}, {"market": "a quiet market"}, {"holding": "held for a long time"}, {}]


def peak_rss_mib() -> float:
    """High-water resident set size of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- parts run in subprocesses -------------------------------------------------------------------------------


def part_image(batches: list[int]) -> list[dict[str, Any]]:
    try:
        from agent.generate.image.embedded import EmbeddedSpriteGenerator
    except ImportError as e:
        return [{"skip": f"embedded image model not installed ({e})"}]
    from agent.generate.base import ImageRequest

    rows = []
    t0 = time.perf_counter()
    import torch

    # the generator pins its own thread count (default 1): give it the one this benchmark was asked for
    gen = EmbeddedSpriteGenerator(device="cpu", max_batch_size=max(batches), threads=torch.get_num_threads())
    load_s = time.perf_counter() - t0
    gen.generate([ImageRequest(TRAITS[0], 0)])  # warm-up
    for b in batches:
        n = max(b, 8)
        reqs = [ImageRequest(TRAITS[i % 16], 1000 + i) for i in range(n)]
        t = time.perf_counter()
        for start in range(0, n, b):
            gen.generate(reqs[start : start + b])
        dt = time.perf_counter() - t
        rows.append(
            {
                "model": "embedded image (sprites32, 50 DDIM steps)",
                "batch": b,
                "items": n,
                "seconds": dt,
                "rate": f"{n / dt:.2f} images/s",
                "load_s": load_s,
                "peak_rss_mib": peak_rss_mib(),
            }
        )
    return rows


def part_lore(batches: list[int], tokens: int, cache_dir: str) -> list[dict[str, Any]]:
    from agent.generate.base import LoreRequest
    from agent.generate.lore.embedded import EmbeddedLoreWriter

    t0 = time.perf_counter()
    writer = EmbeddedLoreWriter(cache_dir, device="cpu", max_new_tokens=tokens, batch_size=max(batches))
    load_s = time.perf_counter() - t0
    rows = []
    for b in batches:
        reqs = [
            LoreRequest(f"Token {i}", i % 3, TRAITS[(i * 5) % 16], FACTS[i % len(FACTS)], 2000 + i)
            for i in range(b)
        ]
        writer.batch_size = b
        t = time.perf_counter()
        out = writer.write(reqs)
        dt = time.perf_counter() - t
        n_tokens = sum(o.details["generated_tokens"] for o in out)
        fallback = sum(o.details["fallback_sentences"] for o in out)
        rows.append(
            {
                "model": f"embedded lore (SmolLM2-135M, greedy, <= {tokens} new tokens)",
                "batch": b,
                "items": b,
                "seconds": dt,
                "rate": f"{n_tokens / dt:.1f} tokens/s ({b / dt:.2f} lore/s)",
                "load_s": load_s,
                "cache": writer.cache_status,
                "fallback_sentences": fallback,
                "peak_rss_mib": peak_rss_mib(),
            }
        )
    return rows


def _run_part(args: list[str]) -> list[dict[str, Any]]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    p = subprocess.run(
        [sys.executable, "-m", "bench.inference", *args], capture_output=True, text=True, env=env, check=False
    )
    for line in p.stdout.splitlines():
        if line.startswith("ROWS "):
            return json.loads(line[5:])
    return [{"skip": f"part failed (exit {p.returncode}): {p.stderr.strip().splitlines()[-1:]}"}]


# --- GPU: SD-1.5-size architecture --------------------------------------------------------------------------------


def sd15_pipeline(device: str, dtype: Any, smoke: bool) -> Any:
    """StableDiffusionPipeline with SD 1.5's architecture (random weights); tiny configs when ``smoke``."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tmp = os.path.join(os.environ.get("TMPDIR", "/tmp"), "chrysalis-bench-tok")
    os.makedirs(tmp, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz,.":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    with open(os.path.join(tmp, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(tmp, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")
    tokenizer = CLIPTokenizer(
        os.path.join(tmp, "vocab.json"), os.path.join(tmp, "merges.txt"), model_max_length=77
    )
    torch.manual_seed(0)
    if smoke:
        unet_cfg = {
            "block_out_channels": (8, 16),
            "layers_per_block": 1,
            "sample_size": 8,
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
            "cross_attention_dim": 32,
            "norm_num_groups": 4,
            "attention_head_dim": 2,
        }
        vae_cfg = {"block_out_channels": (8, 8), "norm_num_groups": 4, "latent_channels": 4}
        text_cfg = {
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
        }
        blocks = 2
    else:  # runwayml/stable-diffusion-v1-5 configs
        unet_cfg = {
            "block_out_channels": (320, 640, 1280, 1280),
            "layers_per_block": 2,
            "sample_size": 64,
            "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            "cross_attention_dim": 768,
            "attention_head_dim": 8,
            "norm_num_groups": 32,
        }
        vae_cfg = {"block_out_channels": (128, 256, 512, 512), "norm_num_groups": 32, "latent_channels": 4}
        text_cfg = {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_attention_heads": 12,
            "num_hidden_layers": 12,
        }
        blocks = 4
    unet = UNet2DConditionModel(in_channels=4, out_channels=4, **unet_cfg)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        layers_per_block=1 if smoke else 2,
        **vae_cfg,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, **text_cfg
        )
    )
    sched = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        clip_sample=False,
        set_alpha_to_one=False,
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        scheduler=sched,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device=device, dtype=dtype, silence_dtype_warnings=True)


def gpu_rows(steps: int, smoke: bool) -> list[list[object]]:
    import torch

    from agent.generate.seed import cpu_generator

    device = "cuda" if not smoke else "cpu"
    dtype = torch.float16 if not smoke else torch.float32
    size = 512 if not smoke else 64
    images = 16 if not smoke else 4
    pipe = sd15_pipeline(device, dtype, smoke)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def run(batch: int, n: int) -> float:
        prompts = ["a serene fire creature, digital art"] * batch
        sync()
        t = time.perf_counter()
        for start in range(0, n, batch):
            gens = [cpu_generator(start + i) for i in range(batch)]
            pipe(
                prompt=prompts,
                num_inference_steps=steps,
                height=size,
                width=size,
                generator=gens,
                output_type="np",
            )
        sync()
        return time.perf_counter() - t

    def peak() -> str:
        """Peak memory since the last call (GPU: allocated by torch; CPU: the process's RSS high-water)."""
        if device != "cuda":
            return f"{peak_rss_mib():.0f} MiB RSS"
        value = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
        return f"{value:.1f} GiB"

    rows: list[list[object]] = []
    from diffusers.models.attention_processor import AttnProcessor

    # plain: the classic attention processor, one image per call
    pipe.unet.set_attn_processor(AttnProcessor())
    run(1, 1)
    dt = run(1, images // 2)
    rows.append(
        [
            "plain diffusers (AttnProcessor, batch 1)",
            1,
            f"{images // 2 / dt:.2f}",
            f"{dt / (images // 2):.2f}",
            peak(),
        ]
    )
    # SDPA (diffusers' default on torch 2), batch 1
    from diffusers.models.attention_processor import AttnProcessor2_0

    pipe.unet.set_attn_processor(AttnProcessor2_0())
    run(1, 1)
    dt = run(1, images // 2)
    rows.append(["SDPA, batch 1", 1, f"{images // 2 / dt:.2f}", f"{dt / (images // 2):.2f}", peak()])
    # batched
    b = 8 if not smoke else 2
    run(b, b)
    dt = run(b, images)
    rows.append([f"SDPA, batch {b}", b, f"{images / dt:.2f}", f"{dt / images:.2f}", peak()])
    # channels_last + torch.compile (GPU only: compiling on the CPU needs a C++ toolchain and minutes)
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.vae.to(memory_format=torch.channels_last)
    label = f"SDPA + channels_last, batch {b}"
    if not smoke:
        pipe.unet = torch.compile(pipe.unet)
        label = f"SDPA + channels_last + torch.compile, batch {b}"
        t = time.perf_counter()
        run(b, b)
        rows.append(
            [label + " (first call, compiling)", b, "-", f"{time.perf_counter() - t:.1f} s total", peak()]
        )
    run(b, b)
    dt = run(b, images)
    rows.append([label, b, f"{images / dt:.2f}", f"{dt / images:.2f}", peak()])
    return rows


# --- main --------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.inference")
    ap.add_argument("--part", choices=["image", "lore"], help=argparse.SUPPRESS)
    ap.add_argument("--image-batches", default="1,8,16")
    ap.add_argument("--lore-batches", default="1,8")
    ap.add_argument("--lore-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--cache-dir", default=".chrysalis/models", help="converted-model cache for SmolLM2")
    ap.add_argument("--sd-steps", type=int, default=20)
    ap.add_argument(
        "--sd-smoke", action="store_true", help="run the GPU table's code on the CPU, tiny configs"
    )
    ap.add_argument("--skip-cpu", action="store_true")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    image_batches = [int(x) for x in args.image_batches.split(",") if x]
    lore_batches = [int(x) for x in args.lore_batches.split(",") if x]
    if args.part == "image":
        print("ROWS " + json.dumps(part_image(image_batches)))
        return 0
    if args.part == "lore":
        print("ROWS " + json.dumps(part_lore(lore_batches, args.lore_tokens, args.cache_dir)))
        return 0

    common = ["--threads", str(args.threads or torch.get_num_threads())]
    if not args.skip_cpu:
        rows = _run_part(["--part", "image", "--image-batches", args.image_batches, *common])
        rows += _run_part(
            ["--part", "lore", "--lore-batches", args.lore_batches, "--lore-tokens", str(args.lore_tokens)]
            + ["--cache-dir", args.cache_dir, *common]
        )
        table, skipped = [], []
        for r in rows:
            if "skip" in r:
                skipped.append(r["skip"])
                continue
            table.append(
                [
                    r["model"],
                    r["batch"],
                    r["items"],
                    f"{r['seconds']:.1f}",
                    r["rate"],
                    f"{r['peak_rss_mib']:.0f}",
                ]
            )
        load = os.getloadavg()[0]
        notes = (
            f"torch {torch.__version__}, {args.threads or torch.get_num_threads()} threads; load average "
            f"{load:.1f} when it finished (other work on the machine slows every row). Peak RSS is each "
            "subprocess's high-water mark after the row (so it includes the model and earlier rows)."
        )
        if skipped:
            notes += " Skipped: " + "; ".join(skipped)
        emit(
            "inference_cpu",
            "Embedded models on the CPU",
            ["model", "batch", "items", "seconds", "throughput", "peak RSS MiB"],
            table,
            notes,
        )
    if torch.cuda.is_available() or args.sd_smoke:
        rows = gpu_rows(args.sd_steps if not args.sd_smoke else 2, args.sd_smoke)
        name = (
            torch.cuda.get_device_name(0)
            if torch.cuda.is_available() and not args.sd_smoke
            else "CPU smoke run"
        )
        emit(
            "inference_gpu" if not args.sd_smoke else "inference_gpu_smoke",
            f"SD-1.5-size architecture, random weights, {'512' if not args.sd_smoke else '64'} px ({name})",
            ["path", "batch", "images/s", "s/image", "peak memory"],
            rows,
            f"{args.sd_steps if not args.sd_smoke else 2} DDIM steps, CFG 7.5, fp16 on CUDA; same process, "
            "same weights. Compile time is shown separately.",
        )
    else:
        print(
            "inference_gpu: skipped, no CUDA device here. On a GPU machine this table compares plain diffusers "
            "calls with batching, channels_last, torch.compile and SDPA on an SD-1.5-size model at 512 px "
            "(`--sd-smoke` runs the same code on the CPU with tiny configs)."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
