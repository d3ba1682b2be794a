"""The gate runner: every check of one candidate, and the near-duplicate index it keeps up to date.

:class:`Gates` is built once from ``[gates]`` (:meth:`Gates.from_settings`); the generate stage calls
:meth:`Gates.check` for each candidate and :meth:`Gates.accept` for the one it keeps, so the next candidate is
compared with it (within a batch too). The order of results is fixed (near duplicate, the image model's metrics,
plug-ins, lore), and every check is a deterministic function of the PNG, the lore, the traits and the index, so
the same inputs always give the same report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.gates.index import HashIndex, SqlHashStore
from agent.gates.lore import lore_gates
from agent.gates.metrics import (
    MetricFn,
    SpriteThresholds,
    gate_palettes,
    load_entry_point,
    run_plugin,
    sprite_metrics,
)
from agent.gates.model import GateResult
from agent.gates.phash import dhash

if TYPE_CHECKING:
    from agent.settings import GatesSettings
    from agent.store import Database


@dataclass
class Gates:
    """The configured checks and the near-duplicate index.

    Args:
        settings: The ``[gates]`` section.
        index: The perceptual hashes to compare with (default: empty, threshold ``duplicate_distance``).
        store: Where accepted hashes are persisted (None: memory only, e.g. a genesis batch).
        plugins: ``(spec, function)`` of the extra metrics (default: loaded from ``settings.metrics``).
    """

    settings: GatesSettings
    index: HashIndex | None = None
    store: SqlHashStore | None = None
    plugins: list[tuple[str, MetricFn]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.index is None:
            self.index = HashIndex(self.settings.duplicate_distance)
        if not self.plugins:
            self.plugins = [(spec, load_entry_point(spec)) for spec in self.settings.metrics]

    @classmethod
    def from_settings(
        cls, settings: GatesSettings, *, db: Database | None = None, collection: str | None = None
    ) -> Gates | None:
        """The gates ``settings`` configure, with the index loaded from ``db`` for ``collection``; None when
        ``gates.enabled`` is false.

        Raises:
            ConfigError: a ``gates.metrics`` entry cannot be loaded.
        """
        if not settings.enabled:
            return None
        index = HashIndex(settings.duplicate_distance)
        store = None
        if db is not None and collection:
            store = SqlHashStore(db, collection)
            store.load(index)
        return cls(settings, index=index, store=store)

    @property
    def max_rerolls(self) -> int:
        return self.settings.max_rerolls

    def check(
        self,
        *,
        png: bytes | None,
        lore: str | None,
        traits: Mapping[str, str],
        backend: str | None,
        token_id: int,
        weights_sha256: str | None = None,
        palettes: str | None = None,
    ) -> list[GateResult]:
        """Every gate's result for one candidate (``png``/``lore`` None: that part is not checked).

        ``weights_sha256`` is the image model's and ``palettes`` the palette families it declares (its
        ``ModelRef.extra["palettes"]``): the sprite palette gate judges the declared families, else the shipped
        model's palettes only (:func:`~agent.gates.metrics.gate_palettes`)."""
        s = self.settings
        out: list[GateResult] = []
        if png is not None:
            out.append(self.duplicate(png, token_id))
            if backend == "embedded":
                thresholds = SpriteThresholds(s.min_symmetry, s.min_palette)
                family = gate_palettes(weights_sha256, palettes)
                out += sprite_metrics(
                    png, traits, thresholds, palette=family is not None, family=family or "shipped"
                )
            for spec, fn in self.plugins:
                out += run_plugin(spec, fn, png, traits, backend)
        if lore is not None:
            out += lore_gates(
                lore, min_chars=s.lore_min_chars, max_chars=s.lore_max_chars, blocklist=s.blocklist
            )
        return out

    def duplicate(self, png: bytes, token_id: int) -> GateResult:
        """The near-duplicate gate: no other token's image within ``duplicate_distance`` bits."""
        assert self.index is not None
        value = dhash(png)
        t = self.settings.duplicate_distance
        found = self.index.near(value, exclude_token=token_id)
        if not found:
            return GateResult("near_duplicate", True, None, t, f"no other token's image within {t} bits")
        m = found[0]
        return GateResult(
            "near_duplicate", False, m.distance, t,
            f"{m.distance} bits from token {m.token_id} stage {m.stage} ({m.image_cid}); threshold {t}",
        )  # fmt: skip

    def accept(self, token_id: int, stage: int, image_cid: str, png: bytes) -> None:
        """Index (and persist) the image kept for ``token_id`` at ``stage``."""
        assert self.index is not None
        value = dhash(png)
        self.index.add(token_id, stage, image_cid, value)
        if self.store is not None:
            self.store.put([(token_id, stage, image_cid, value)])
