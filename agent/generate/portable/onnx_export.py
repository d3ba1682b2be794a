"""Export the embedded sprite model to ONNX, with the DDIM constants its sampler needs in a small JSON file.

:func:`export_sprite_model` writes two files into ``out_dir``:

- ``unet.onnx``: the model's UNet (opset 17, TorchScript exporter, constant folding on). Inputs ``sample`` float32
  ``[batch, 3, 32, 32]``, ``timestep`` int64 scalar (0-d, as the torch path passes each DDIM timestep),
  ``class_labels`` int64 ``[batch]``; output ``model_output`` float32 ``[batch, 3, 32, 32]`` (what the UNet
  predicts: ``v`` for the shipped v-prediction model). The batch dimension is dynamic.
- ``scheduler.json`` (:data:`CONSTANTS_FORMAT`): everything the DDIM loop of
  :class:`~agent.generate.image.embedded.EmbeddedSpriteGenerator` uses, as that loop uses it: ``alphas_cumprod``
  as the float32 values the torch scheduler holds (each written as the shortest decimal of its exact float32
  value, so parsing it as a double and rounding to float32 gives the same bits; ``tables_f32le_sha256`` checks
  that), the
  final alpha, the prediction type, the timestep spacing and offset, clipping, and the rules (timesteps for a
  number of steps, denoise steps for a strength, pixel conversion) as formulas, not as tables. The square roots
  the loop takes are tables too (``sqrt_alphas_cumprod``, ``sqrt_one_minus_alphas_cumprod``): torch's float32
  ``** 0.5`` is not always correctly rounded, so a port that computed them would drift from the torch path.
  :mod:`agent.generate.portable.onnx_sampler` reads it.

Guarantee: the same model directory and the same torch/onnx versions give byte-identical files (the exporter
writes no time stamps, paths or doc strings; the JSON is written with sorted keys), so the sha256 the returned
dict reports can be pinned (measured: two processes, two output directories, torch 2.13.0+cpu / onnx 1.23.2, give
the same bytes, ``tests/generate/test_portable_export_pin.py``). Another torch or onnx version may give other
bytes: that is why ``chrysalis model publish`` pins the export (:func:`agent.ops.models.pin_portable`) and the
model's publication manifest names it by CID and sha256, so the portable generator and ``verify`` use those bytes
rather than exporting again.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from agent.errors import ConfigError
from agent.generate.image.embedded import SpriteModel, file_sha256, load_sprite_model
from agent.generate.runtime import CANONICAL_THREADS, torch_threads
from agent.generate.sprites.conditioning import NULL_CLASS
from agent.generate.sprites.dataset import SIZE

ONNX_NAME = "unet.onnx"
CONSTANTS_NAME = "scheduler.json"
OPSET = 17
CONSTANTS_FORMAT = "chrysalis.ddim-constants/1"
INPUT_NAMES = ("sample", "timestep", "class_labels")
OUTPUT_NAME = "model_output"

TIMESTEP_RULES = {
    "leading": "step_ratio = num_train_timesteps // n; timesteps = [i * step_ratio + steps_offset "
    "for i in n-1 .. 0] (int64, descending)",
    "trailing": "step_ratio = num_train_timesteps / n (float64); timesteps = round_half_even(numpy.arange("
    "num_train_timesteps, 0, -step_ratio)) - 1 (int64, descending; steps_offset unused)",
}
"""How DDIMScheduler.set_timesteps spaces ``n`` inference steps (the spacings the exporter accepts)."""


class _UNetForExport(torch.nn.Module):
    """The UNet with positional inputs and a plain tensor output (what the tracer exports)."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, class_labels: torch.Tensor
    ) -> torch.Tensor:
        out: torch.Tensor = self.unet(sample, timestep, class_labels=class_labels).sample
        return out


def export_sprite_model(model_dir: Path | str, out_dir: Path | str) -> dict[str, Any]:
    """Export the sprite model in ``model_dir`` (verified against its manifest) to ``out_dir``.

    Writes ``unet.onnx`` and ``scheduler.json`` (see the module docstring), creating ``out_dir`` if needed and
    replacing those two files if present. Returns ``{"unet.onnx": sha256, "scheduler.json": sha256, "opset",
    "model_id", "weights_sha256", "out_dir"}``.

    Raises:
        NotFoundError: ``model_dir`` holds no sprite model (no manifest, or a file it lists is missing).
        ModelDigestError: a file's sha256 differs from the manifest's.
        ConfigError: the scheduler is configured in a way the exported constants cannot describe.
    """
    model = load_sprite_model(Path(model_dir), device="cpu", dtype=torch.float32)
    constants = ddim_constants(model)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"export destination {out} is a file", hint="pass a directory (it is created if missing)"
        )
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / ONNX_NAME
    _export_unet(model, onnx_path)
    constants["files"] = {ONNX_NAME: file_sha256(onnx_path)}
    const_path = out / CONSTANTS_NAME
    const_path.write_text(json.dumps(constants, indent=1, sort_keys=True) + "\n")
    return {
        ONNX_NAME: constants["files"][ONNX_NAME],
        CONSTANTS_NAME: file_sha256(const_path),
        "opset": OPSET,
        "model_id": model.manifest["model_id"],
        "weights_sha256": model.manifest["weights_sha256"],
        "out_dir": str(out),
    }


def _export_unet(model: SpriteModel, path: Path) -> None:
    wrapper = _UNetForExport(model.unet).eval()
    example = (
        torch.zeros((1, 3, SIZE, SIZE), dtype=torch.float32),
        torch.tensor(999, dtype=torch.int64),
        torch.tensor([0], dtype=torch.int64),
    )
    batch = {0: "batch"}
    with warnings.catch_warnings(), torch_threads(CANONICAL_THREADS), torch.no_grad():
        # The tracer warns that Python branches on shapes become constants (diffusers' ">= 64 rows: contiguous"
        # and "> 2**31 elements" checks, both layout-only), and that the TorchScript exporter is deprecated.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            example,
            str(path),
            dynamo=False,
            export_params=True,
            opset_version=OPSET,
            do_constant_folding=True,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes={"sample": batch, "class_labels": batch, OUTPUT_NAME: batch},
        )


def ddim_constants(model: SpriteModel) -> dict[str, Any]:
    """The DDIM constants and rules of ``model``'s scheduler as :class:`EmbeddedSpriteGenerator` runs it (eta 0)."""
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler

    cfg = {k: v for k, v in model.scheduler_config.items() if not k.startswith("_")}
    sched = DDIMScheduler.from_config(model.scheduler_config)
    spacing = cfg.get("timestep_spacing", "leading")
    if spacing not in TIMESTEP_RULES or cfg.get("thresholding") or cfg.get("rescale_betas_zero_snr"):
        raise ConfigError(
            f"the model's DDIM scheduler (timestep_spacing={spacing!r}, thresholding={cfg.get('thresholding')}, "
            f"rescale_betas_zero_snr={cfg.get('rescale_betas_zero_snr')}) is not one the ONNX sampler implements",
            hint=f"export a model whose scheduler uses timestep_spacing in {sorted(TIMESTEP_RULES)}, "
            "thresholding false and rescale_betas_zero_snr false (as the shipped sprites32 does)",
        )
    if cfg["prediction_type"] not in ("epsilon", "v_prediction", "sample"):
        raise ConfigError(
            f"unknown prediction_type {cfg['prediction_type']!r}",
            hint="use epsilon, v_prediction or sample",
        )
    acp = sched.alphas_cumprod.to(torch.float32)
    final = sched.final_alpha_cumprod.to(torch.float32)
    # torch's float32 square roots are not always the correctly rounded ones (about 1 in 5 of these differ from
    # numpy's by one ulp), so the tables hold the values torch computes, element by element as the step does.
    tables = {
        "alphas_cumprod": acp.numpy(),
        "sqrt_alphas_cumprod": torch.stack([a**0.5 for a in acp]).numpy(),
        "sqrt_one_minus_alphas_cumprod": torch.stack([(1 - a) ** 0.5 for a in acp]).numpy(),
    }
    return {
        "format": CONSTANTS_FORMAT,
        "scheduler": "DDIMScheduler",
        "model_id": model.manifest["model_id"],
        "weights_sha256": model.manifest["weights_sha256"],
        "source_scheduler_config": cfg,
        "dtype": "float32",
        "num_train_timesteps": int(cfg["num_train_timesteps"]),
        "prediction_type": cfg["prediction_type"],
        "timestep_spacing": spacing,
        "steps_offset": int(cfg.get("steps_offset", 0)),
        "clip_sample": bool(cfg.get("clip_sample", True)),
        "clip_sample_range": float(cfg.get("clip_sample_range", 1.0)),
        "eta": 0.0,
        "init_noise_sigma": float(sched.init_noise_sigma),
        "tables": {name: [float(v) for v in values] for name, values in tables.items()},
        "tables_f32le_sha256": {name: _f32_sha256(values) for name, values in tables.items()},
        "final_alpha_cumprod": float(final),
        "sqrt_final_alpha_cumprod": float(final**0.5),
        "sqrt_one_minus_final_alpha_cumprod": float((1 - final) ** 0.5),
        "null_class": NULL_CLASS,
        "native_size": SIZE,
        "onnx": {
            "file": ONNX_NAME,
            "opset": OPSET,
            "inputs": {
                "sample": "float32 [batch, 3, 32, 32]",
                "timestep": "int64 [] (one DDIM timestep)",
                "class_labels": "int64 [batch]",
            },
            "output": {OUTPUT_NAME: "float32 [batch, 3, 32, 32]"},
        },
        "rules": {
            "timesteps": TIMESTEP_RULES[spacing],
            "denoise_steps": "fresh: n; img2img: min(n, round_half_even(n * strength)); the loop runs the last "
            "denoise_steps of the n timesteps",
            "start": "fresh: x = noise * init_noise_sigma; img2img: x0 = uint8_start / 127.5 - 1 (float32, "
            "channels first), x = sqrt(a[t0]) * x0 + sqrt(1 - a[t0]) * noise with t0 the first timestep run "
            "(x = x0 when denoise_steps is 0; sqrt from the tables); the start is the previous stage's 32x32 "
            "pixels, palette-transferred to the new mood as the torch generator does",
            "step": "prev_t = t - num_train_timesteps // n; a_t = alphas_cumprod[t]; a_prev = alphas_cumprod[prev_t] "
            "if prev_t >= 0 else final_alpha_cumprod; v_prediction: x0 = sqrt(a_t) * x - sqrt(1 - a_t) * out, "
            "eps = sqrt(a_t) * out + sqrt(1 - a_t) * x; epsilon: x0 = (x - sqrt(1 - a_t) * out) / sqrt(a_t), "
            "eps = out; sample: x0 = out, eps = (x - sqrt(a_t) * x0) / sqrt(1 - a_t); clip_sample: "
            "x0 = clamp(x0, -range, range); x = sqrt(a_prev) * x0 + sqrt(1 - a_prev) * eps (all float32, each "
            "operation rounded; every sqrt(...) is read from the tables, never computed)",
            "guidance": "guidance_scale g != 1: run [x, x] with labels [label, null_class]; "
            "out = uncond + g * (cond - uncond)",
            "pixels": "uint8 = round_half_even((clamp(x, -1, 1) + 1) * 127.5), channels last",
        },
    }


def load_constants(path: Path) -> dict[str, Any]:
    """Read a ``scheduler.json`` written by :func:`export_sprite_model`, checking its format and its float32 table.

    Raises:
        NotFoundError: the file is missing.
        ConfigError: it is not a ``chrysalis.ddim-constants/1`` file, or a table does not hash to its
            entry in ``tables_f32le_sha256``.
    """
    from agent.errors import NotFoundError

    hint = (
        "re-export the model with agent.generate.portable.onnx_export.export_sprite_model(model_dir, out_dir)"
    )
    if not path.is_file():
        raise NotFoundError(f"no DDIM constants at {path}", hint=hint)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not JSON: {e}", hint=hint) from None
    if not isinstance(data, dict) or data.get("format") != CONSTANTS_FORMAT:
        raise ConfigError(f"{path} is not a {CONSTANTS_FORMAT} file", hint=hint)
    for name, want in data["tables_f32le_sha256"].items():
        if _f32_sha256(f32_table(data, name)) != want:
            raise ConfigError(f"{path}: tables.{name} do not match tables_f32le_sha256.{name}", hint=hint)
    return data


def f32_table(constants: dict[str, Any], name: str) -> NDArray[np.float32]:
    """The float32 table ``name`` of a ``scheduler.json`` (its decimals are exact float32 values)."""
    return np.asarray(constants["tables"][name], dtype=np.float64).astype(np.float32)


def _f32_sha256(values: NDArray[np.float32]) -> str:
    return hashlib.sha256(np.asarray(values, dtype="<f4").tobytes()).hexdigest()


__all__ = [
    "CONSTANTS_FORMAT",
    "CONSTANTS_NAME",
    "ONNX_NAME",
    "OPSET",
    "ddim_constants",
    "export_sprite_model",
    "f32_table",
    "load_constants",
]
