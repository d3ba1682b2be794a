"""Portable building blocks: computations written once in Python and once in JavaScript (``renderer/``) that give
the same bits in both, so a browser can re-run what the agent ran.

- :mod:`agent.generate.portable.noise`: the ``chrysalis-noise/1`` Gaussian noise (Philox4x32-10, polar
  Box-Muller, fdlibm's logarithm, float32), mirrored by ``renderer/noise.js``.
"""

from agent.generate.portable.noise import SCHEME, fdlibm_log, philox4x32_10, portable_randn

__all__ = ["SCHEME", "fdlibm_log", "philox4x32_10", "portable_randn"]
