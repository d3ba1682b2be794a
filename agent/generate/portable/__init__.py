"""Portable building blocks: computations written once in Python and once in JavaScript (``renderer/``) that give
the same bits in both, so a browser can re-run what the agent ran.

- :mod:`agent.generate.portable.noise`: the ``chrysalis-noise/1`` Gaussian noise (Philox4x32-10, polar
  Box-Muller, fdlibm's logarithm, float32), mirrored by ``renderer/noise.js``.
- :mod:`agent.generate.portable.onnx_export`: the embedded sprite model as ``unet.onnx`` plus ``scheduler.json``
  (the DDIM tables, square roots as torch computes them, each with its sha256).
- :mod:`agent.generate.portable.onnx_sampler`: the DDIM loop in numpy over ONNX Runtime (CPU, one thread), fresh
  and image-to-image; torch's bits in every step but the UNet (``bench/onnx_agreement.py`` measures the pixels).
- :mod:`agent.generate.portable.wasm_runtime`: the canonical portable runtime, the export run by onnxruntime-web's
  WASM build in a long-lived Node.js process (``renderer/node_render.mjs`` over ``renderer/sampler.js``, the same
  float32 DDIM loop a browser runs), and its numpy twin for comparison.
"""

from agent.generate.portable.noise import SCHEME, fdlibm_log, philox4x32_10, portable_randn

__all__ = ["SCHEME", "fdlibm_log", "philox4x32_10", "portable_randn"]
