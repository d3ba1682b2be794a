"""Model quality metrics as gates: a small registry keyed by the image backend, plus plug-in entry points.

The embedded sprite model (backend ``embedded``) is gated on left-right symmetry and palette adherence for the
requested mood (:mod:`agent.generate.sprites.quality`, on the native 32x32 pixels), in the palette families the model
draws in (:func:`gate_palettes`). Other backends have no
metric by default. More metrics plug in through ``gates.metrics``: ``module:function`` entry points, each called
as ``function(png: bytes, traits: Mapping[str, str], backend: str | None) -> Sequence[GateResult]`` for every
candidate (whatever the backend; a plug-in returns ``[]`` for images it does not judge).

All metrics are deterministic functions of the PNG bytes and the traits.
"""

from __future__ import annotations

import functools
import importlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from agent.errors import ConfigError
from agent.gates.model import GateResult

MetricFn = Callable[[bytes, Mapping[str, str], "str | None"], Sequence[GateResult]]


@dataclass(frozen=True)
class SpriteThresholds:
    """Lowest symmetry and palette adherence a sprite may have."""

    min_symmetry: float
    min_palette: float


@functools.cache
def shipped_weights_sha256() -> str:
    """The shipped sprite model's weights digest (its manifest's ``weights_sha256``)."""
    from agent.generate.image.embedded import SHIPPED_DIR

    return str(json.loads((SHIPPED_DIR / "manifest.json").read_text())["weights_sha256"])


def knows_palettes(weights_sha256: str | None) -> bool:
    """Whether the palette gate can judge this embedded model: the mood palettes it checks are the shipped model's,
    so a fine-tune (trained on its own palettes, e.g. the neon example) gets symmetry only. ``None``: unknown
    weights, judged as the shipped model."""
    return weights_sha256 is None or weights_sha256 == shipped_weights_sha256()


def gate_palettes(weights_sha256: str | None, palettes: str | None = None) -> str | None:
    """The palette families the palette gate judges an embedded model's sprites in: ``palettes``, those the model
    declares (its manifest's ``palettes``, in its ``ModelRef.extra``), when given; else the shipped ones where
    :func:`knows_palettes`; else None (a fine-tune that declares none: symmetry only)."""
    from agent.generate.sprites.palette import SHIPPED_FAMILY

    if palettes is not None:
        return palettes
    return SHIPPED_FAMILY if knows_palettes(weights_sha256) else None


def sprite_metrics(
    png: bytes,
    traits: Mapping[str, str],
    thresholds: SpriteThresholds,
    *,
    palette: bool = True,
    family: str = "shipped",
) -> list[GateResult]:
    """Symmetry and (when ``palette`` and the traits name a known mood) palette adherence of an embedded-model
    sprite to the mood's family among those named ``family`` (a key of
    :data:`~agent.generate.sprites.palette.PALETTE_FAMILIES`)."""
    from agent.generate.image.embedded import decode_png
    from agent.generate.sprites.conditioning import MOODS
    from agent.generate.sprites.palette import SHIPPED_FAMILY
    from agent.generate.sprites.quality import palette_adherence, symmetry

    pixels = decode_png(png)
    out = []
    sym = round(symmetry(pixels), 4)
    ok = sym >= thresholds.min_symmetry
    out.append(
        GateResult(
            "symmetry",
            ok,
            sym,
            thresholds.min_symmetry,
            f"symmetry {sym:.3f} {'>=' if ok else '<'} {thresholds.min_symmetry}",
        )  # fmt: skip
    )
    mood = traits.get("mood")
    if palette and mood in MOODS:
        pal = round(palette_adherence(pixels, mood, family=family), 4)
        ok = pal >= thresholds.min_palette
        which = mood if family == SHIPPED_FAMILY else f"{mood} ({family} palettes)"
        out.append(
            GateResult(
                "palette",
                ok,
                pal,
                thresholds.min_palette,
                f"palette adherence to {which} {pal:.3f} {'>=' if ok else '<'} {thresholds.min_palette}",
            )  # fmt: skip
        )
    return out


BUILTIN_BACKENDS: tuple[str, ...] = ("embedded",)
"""Image backends with built-in metrics."""


def load_entry_point(spec: str) -> MetricFn:
    """The function ``module:function`` names.

    Raises:
        ConfigError: the spec is malformed, the module cannot be imported or has no such callable.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"gates.metrics entry {spec!r} is not module:function",
            hint="write it as 'package.module:function', e.g. 'mygates.checks:sharpness'",
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"gates.metrics entry {spec!r}: cannot import {module_name}: {exc}",
            hint="install the module or fix its name in [gates] metrics",
        ) from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(
            f"gates.metrics entry {spec!r}: {module_name} has no callable {attr}",
            hint="name a function taking (png, traits, backend) and returning a list of GateResult",
        )
    return fn


def run_plugin(
    spec: str, fn: MetricFn, png: bytes, traits: Mapping[str, str], backend: str | None
) -> list[GateResult]:
    """A plug-in's results, checked to be :class:`GateResult` values.

    Raises:
        ConfigError: the plug-in returned something else.
    """
    results = list(fn(png, traits, backend))
    for r in results:
        if not isinstance(r, GateResult):
            raise ConfigError(
                f"gates.metrics entry {spec!r} returned {type(r).__name__}, not GateResult",
                hint="return a list of agent.gates.GateResult",
            )
    return results
