"""Properties: valid bands partition the number line, and evaluation is deterministic."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.rules import RuleEngine, RulesConfigError
from agent.rules.model import RulesSpec

finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)


@st.composite
def band_layouts(draw: Any) -> tuple[list[dict[str, Any]], list[tuple[float, bool]]]:
    """Valid bands plus their boundaries ``(t, x == t belongs to the right)``, derived independently."""
    cuts = draw(st.lists(finite, max_size=6, unique=True).map(sorted))
    bands: list[dict[str, Any]] = [{}]
    boundaries: list[tuple[float, bool]] = []
    for t in cuts:
        layout = draw(st.sampled_from(["right", "left", "point"]))
        if layout == "point":  # ..., t) [t, t] (t, ...
            bands[-1].update(max=t, max_inclusive=False)
            bands.append({"min": t, "max": t, "min_inclusive": True, "max_inclusive": True})
            bands.append({"min": t, "min_inclusive": False})
            boundaries += [(t, True), (t, False)]
        else:  # right: ..., t) [t, ...   left: ..., t] (t, ...
            bands[-1].update(max=t, max_inclusive=layout == "left")
            bands.append({"min": t, "min_inclusive": layout == "right"})
            boundaries.append((t, layout == "right"))
    for i, band in enumerate(bands):
        band["value"] = f"v{i}"
    return bands, boundaries


def engine_for(bands: list[dict[str, Any]]) -> RuleEngine:
    spec = RulesSpec.model_validate(
        {
            "version": 1,
            "features": {"x": {"type": "number"}, "y": {"type": "number"}},
            "traits": {
                "level": {"kind": "bands", "feature": "x", "bands": bands},
                "mood": {"kind": "constant", "value": "serene"},
            },
            "facts": {
                "echo": {
                    "kind": "bands",
                    "feature": "y",
                    "bands": [{"max": 0, "value": "low"}, {"min": 0, "value": "high"}],
                }
            },
            "image": {"allowed": {"mood": ["serene"]}, "conditioning": {"mood": "mood"}},
        }
    )
    return RuleEngine(spec)


def probes(boundaries: list[tuple[float, bool]], extra: float) -> list[float]:
    """Every boundary, its float neighbours, the infinities and an arbitrary number."""
    xs = [extra, -math.inf, math.inf]
    for t, _ in boundaries:
        xs += [t, math.nextafter(t, -math.inf), math.nextafter(t, math.inf)]
    return xs


@settings(max_examples=300, deadline=None)
@given(layout=band_layouts(), extra=finite)
def test_every_number_falls_in_exactly_one_band(layout, extra: float) -> None:
    bands, boundaries = layout
    engine = engine_for(bands)
    spec_bands = engine.spec.traits["level"].bands
    for x in probes(boundaries, extra):
        containing = [b.value for b in spec_bands if b.contains(x)]
        assert len(containing) == 1, (x, containing)
        passed = sum(1 for t, right in boundaries if x > t or (x == t and right))
        got = engine.evaluate({"x": x, "y": 0}, stage=0, token_id=0).traits["level"]
        assert got == containing[0] == f"v{passed}"


@settings(max_examples=150, deadline=None)
@given(
    layout=band_layouts(),
    x=finite | st.integers(min_value=-(10**15), max_value=10**15),
    y=finite,
    stage=st.integers(min_value=0, max_value=10),
    token_id=st.integers(min_value=0, max_value=2**64),
)
def test_evaluation_is_deterministic(layout, x: float, y: float, stage: int, token_id: int) -> None:
    bands, _ = layout
    first = engine_for(bands)
    second = engine_for(bands)
    inputs = {"x": x, "y": y, "unused": "anything"}
    reordered = dict(reversed(list(inputs.items())))
    results = [
        first.evaluate(inputs, stage=stage, token_id=token_id),
        first.evaluate(inputs, stage=stage, token_id=token_id),
        second.evaluate(reordered, stage=stage, token_id=token_id),
    ]
    assert results[0] == results[1] == results[2]
    assert list(results[0].traits) == list(results[2].traits) == sorted(results[0].traits)
    assert first.sha256 == second.sha256


@settings(max_examples=150, deadline=None)
@given(layout=band_layouts(), data=st.data())
def test_reordered_bands_are_rejected(layout, data: st.DataObject) -> None:
    bands, _ = layout
    shuffled = data.draw(st.permutations(bands))
    if shuffled == bands:
        engine_for(shuffled)
        return
    try:
        engine_for(shuffled)
    except RulesConfigError as err:
        assert err.rule == "[traits.level]"
    else:  # pragma: no cover - a reordering that still partitions the line would be a checker bug
        raise AssertionError(f"accepted out-of-order bands {shuffled}")
