"""The embedded sprite model's DDIM loop in numpy over ONNX Runtime (CPU), from an export of
:mod:`agent.generate.portable.onnx_export`.

It mirrors :class:`~agent.generate.image.embedded.EmbeddedSpriteGenerator` operation for operation in float32:
the same timesteps, the same start (noise, or the noised img2img start), the same DDIM step (eta 0, clipping,
v/epsilon/sample prediction), classifier-free guidance, and the same uint8 rounding. The initial noise is an
explicit argument, so the noise the torch path draws (or any other) can be fed to both runtimes. Given the same
model outputs, the schedule, the img2img noising and every step give torch's float32 bits exactly (the square
roots come from ``scheduler.json``'s tables, as torch computed them); only the UNet itself differs.

Determinism: one session per sampler with 1 intra-op and 1 inter-op thread, sequential execution, deterministic
compute and a fixed graph optimisation level; each image goes through the model alone (batch 1, or 2 with
guidance), as the torch path does on the CPU. The same inputs therefore give the same bits in every call and
process on one machine. Against torch the UNet's float bits differ in the last places (other convolution kernels),
so after the loop a few uint8 values may be off by 1 (``bench/onnx_agreement.py`` measures how many).

Palette transfer is the caller's: pass the start the torch generator denoises from
(``EmbeddedSpriteGenerator.check_inputs`` returns it), i.e. the previous stage's pixels recoloured to the new mood.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agent.errors import ConfigError, NotFoundError
from agent.generate.portable.onnx_export import (
    CONSTANTS_NAME,
    INPUT_NAMES,
    ONNX_NAME,
    f32_table,
    load_constants,
)
from agent.generate.sprites.dataset import SIZE

F32 = np.float32
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


class OnnxSpriteSampler:
    """DDIM sampling of an exported sprite model with ONNX Runtime on the CPU.

    Args:
        export_dir: A directory holding ``unet.onnx`` and ``scheduler.json`` (:func:`export_sprite_model`).
        optimization: ONNX Runtime's graph optimisation level, fixed per sampler (``"basic"`` by default: constant
            folding and redundant-node removal only, no CPU-specific layout transforms).
    """

    def __init__(self, export_dir: Path | str, *, optimization: str = "basic") -> None:
        import onnxruntime as ort

        directory = Path(export_dir)
        onnx_path = directory / ONNX_NAME
        hint = "export the model first: agent.generate.portable.onnx_export.export_sprite_model(model_dir, out_dir)"
        if not onnx_path.is_file():
            raise NotFoundError(f"no exported sprite model at {directory} (missing {ONNX_NAME})", hint=hint)
        if optimization not in OPTIMIZATION_LEVELS:
            raise ConfigError(
                f"optimization={optimization!r}", hint=f"use one of {', '.join(OPTIMIZATION_LEVELS)}"
            )
        self.constants: dict[str, Any] = load_constants(directory / CONSTANTS_NAME)
        c = self.constants
        # sqrt(a) and sqrt(1 - a) for every timestep, then for the final alpha (index -1 of the extended tables)
        self.sqrt_a = np.append(f32_table(c, "sqrt_alphas_cumprod"), F32(c["sqrt_final_alpha_cumprod"]))
        self.sqrt_1ma = np.append(
            f32_table(c, "sqrt_one_minus_alphas_cumprod"), F32(c["sqrt_one_minus_final_alpha_cumprod"])
        )
        self.num_train_timesteps = int(c["num_train_timesteps"])
        self.null_class = int(c["null_class"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.use_deterministic_compute = True
        opts.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[optimization]
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for unreadable models
            raise ConfigError(f"ONNX Runtime cannot load {onnx_path}: {e}", hint=hint) from None
        names = tuple(i.name for i in self.session.get_inputs())
        if names != INPUT_NAMES:
            raise ConfigError(f"{onnx_path} takes inputs {names}, not {INPUT_NAMES}", hint=hint)
        self.optimization = optimization

    # --- the schedule -------------------------------------------------------------------------------------------

    def timesteps(self, num_inference_steps: int) -> NDArray[np.int64]:
        """The ``num_inference_steps`` DDIM timesteps, descending (``DDIMScheduler.set_timesteps``)."""
        n, c = _steps(num_inference_steps), self.constants
        if c["timestep_spacing"] == "leading":
            ratio = self.num_train_timesteps // n
            ts = (np.arange(0, n) * ratio).round()[::-1].copy().astype(np.int64)
            return ts + int(c["steps_offset"])
        ts = np.round(np.arange(self.num_train_timesteps, 0, -self.num_train_timesteps / n)).astype(np.int64)
        return ts - 1

    @staticmethod
    def denoise_steps(num_inference_steps: int, strength: float | None) -> int:
        """Steps an image runs: all for a fresh image (``strength`` None), else ``min(n, round(n * strength))``."""
        n = _steps(num_inference_steps)
        if strength is None:
            return n
        if isinstance(strength, bool) or not 0.0 <= float(strength) <= 1.0 or math.isnan(strength):
            raise ConfigError(
                f"strength {strength!r} is outside [0, 1]", hint="evolutions usually use 0.4-0.7"
            )
        return min(n, int(round(n * float(strength))))

    # --- sampling -----------------------------------------------------------------------------------------------

    def unet(
        self, sample: NDArray[np.float32], timestep: int, class_labels: NDArray[np.int64]
    ) -> NDArray[np.float32]:
        """One forward pass: ``sample`` float32 [B, 3, 32, 32], one timestep, int64 labels [B]."""
        feeds = {
            "sample": np.ascontiguousarray(sample, dtype=F32),
            "timestep": np.asarray(timestep, dtype=np.int64).reshape(()),
            "class_labels": np.ascontiguousarray(class_labels, dtype=np.int64),
        }
        out: NDArray[np.float32] = self.session.run(None, feeds)[0]
        return out

    def sample(
        self,
        noise: NDArray[np.float32],
        label: int,
        *,
        num_inference_steps: int = 50,
        guidance_scale: float = 1.0,
        init: NDArray[np.uint8] | None = None,
        strength: float | None = None,
    ) -> NDArray[np.uint8]:
        """One image: (32, 32, 3) uint8, from ``noise`` (float32, (3, 32, 32) or (1, 3, 32, 32)) and class ``label``.

        ``init`` (32, 32, 3) uint8 with ``strength`` in [0, 1] denoises from that start (img2img) through the last
        ``denoise_steps`` timesteps; without ``init`` the image is fresh and ``strength`` must be None.
        """
        noise = np.asarray(noise)
        if noise.dtype != F32 or noise.size != 3 * SIZE * SIZE:
            raise ConfigError(
                f"noise is {noise.dtype} {noise.shape}, not float32 (3, {SIZE}, {SIZE})",
                hint="pass one image's noise as float32 (e.g. torch.randn(...).numpy() or portable_randn)",
            )
        if not 0 <= int(label) < self.null_class:
            raise ConfigError(
                f"class label {label} is outside [0, {self.null_class})", hint="use class_label(traits)"
            )
        if not guidance_scale >= 1.0:
            raise ConfigError(f"guidance_scale={guidance_scale}", hint="use 1.0 (off) or more")
        if (init is None) != (strength is None):
            raise ConfigError(
                "init and strength go together",
                hint="pass both for an evolution (img2img), neither for a fresh image",
            )
        ts = self.timesteps(num_inference_steps)
        n_run = self.denoise_steps(num_inference_steps, strength)
        run = ts[len(ts) - n_run :]
        eps0 = noise.reshape(1, 3, SIZE, SIZE)
        if init is None:
            x = eps0 * F32(self.constants["init_noise_sigma"])
        else:
            start = np.asarray(init)
            if start.dtype != np.uint8 or start.shape != (SIZE, SIZE, 3):
                raise ConfigError(
                    f"init is {start.dtype} {start.shape}, not uint8 ({SIZE}, {SIZE}, 3)",
                    hint="pass the previous stage's native pixels (decode_png), palette-transferred as the torch "
                    "generator does",
                )
            x0 = start.transpose(2, 0, 1)[None].astype(F32) / F32(127.5) - F32(1.0)
            x = x0 if n_run == 0 else self._add_noise(x0, eps0, int(run[0]))
        labels = np.array([label], dtype=np.int64)
        cfg = guidance_scale != 1.0
        g = F32(guidance_scale)
        if cfg:
            labels = np.array([label, self.null_class], dtype=np.int64)
        step_back = self.num_train_timesteps // _steps(num_inference_steps)
        for t in run:
            out = self.unet(np.concatenate([x, x]) if cfg else x, int(t), labels)
            if cfg:
                cond, uncond = out[:1], out[1:]
                out = uncond + g * (cond - uncond)
            x = self._step(out, int(t), int(t) - step_back, x)
        px = np.rint((np.clip(x, F32(-1), F32(1)) + F32(1.0)) * F32(127.5)).astype(np.uint8)
        return np.ascontiguousarray(px[0].transpose(1, 2, 0))

    def _add_noise(self, x0: NDArray[np.float32], noise: NDArray[np.float32], t: int) -> NDArray[np.float32]:
        noisy: NDArray[np.float32] = self.sqrt_a[t] * x0 + self.sqrt_1ma[t] * noise
        return noisy

    def _step(
        self, out: NDArray[np.float32], t: int, prev_t: int, x: NDArray[np.float32]
    ) -> NDArray[np.float32]:
        """``DDIMScheduler.step`` with eta 0, in float32 with each operation rounded as torch rounds it."""
        sa, sb = self.sqrt_a[t], self.sqrt_1ma[t]
        p = prev_t if prev_t >= 0 else -1  # -1: the final alpha
        kind = self.constants["prediction_type"]
        if kind == "v_prediction":
            x0 = sa * x - sb * out
            eps = sa * out + sb * x
        elif kind == "epsilon":
            x0 = (x - sb * out) / sa
            eps = out
        else:  # "sample"
            x0 = out
            eps = (x - sa * x0) / sb
        if self.constants["clip_sample"]:
            r = F32(self.constants["clip_sample_range"])
            x0 = np.clip(x0, -r, r)
        prev: NDArray[np.float32] = self.sqrt_a[p] * x0 + self.sqrt_1ma[p] * eps
        return prev


def torch_noise(seed: int) -> NDArray[np.float32]:
    """The (1, 3, 32, 32) float32 noise :class:`EmbeddedSpriteGenerator` draws for ``seed`` (its receipts'
    ``generator``: ``torch.Generator('cpu').manual_seed(seed); randn((1, 3, 32, 32))``), to replay a torch-made
    image here. Needs torch; portable receipts use :func:`agent.generate.portable.noise.portable_randn` instead."""
    import torch

    g = torch.Generator("cpu").manual_seed(seed)
    out: NDArray[np.float32] = torch.randn((1, 3, SIZE, SIZE), generator=g, dtype=torch.float32).numpy()
    return out


def pixel_agreement(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> dict[str, float]:
    """How far two stacks of uint8 images (N, H, W, 3) agree: ``images_identical`` (share of images equal bit for
    bit), ``pixels_identical`` (share of pixels whose three values are all equal), ``values_off`` (how many uint8
    values differ, in all) and ``max_abs_diff`` (the largest difference of one value)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 4:
        raise ConfigError(
            f"image stacks of shapes {a.shape} and {b.shape} cannot be compared", hint="pass (N, H, W, 3)"
        )
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return {
        "images_identical": float((diff.reshape(len(a), -1).max(axis=1, initial=0) == 0).mean()),
        "pixels_identical": float((diff.max(axis=-1) == 0).mean()),
        "values_off": float((diff != 0).sum()),
        "max_abs_diff": float(diff.max(initial=0)),
    }


def _steps(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(
            f"num_inference_steps={n!r}", hint="use a whole number of at least 1 (50 is the default)"
        )
    return int(n)


__all__ = ["OPTIMIZATION_LEVELS", "OnnxSpriteSampler", "pixel_agreement", "torch_noise"]
