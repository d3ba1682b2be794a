"""``chrysalis rules check``: the rules file against the oracles the agent is configured with.

:func:`provided_features` lists the reading names the configured oracles really produce (the wallet, the price
feed, ``[[oracles.http]]`` and ``[[oracles.eth_call]]``, exactly as :func:`agent.pipeline.inputs.build_oracles`
builds them), and :func:`check_rules` loads a rules file with them: every feature a rule reads must be declared,
and every declared feature must be one an oracle provides. A feature name misspelt the same way in ``[features]``
and in the rule that reads it (``wallet.tx_cuont``) is caught here and when the agent starts, instead of failing
every evolution at runtime with a missing feature.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import ChrysalisError
from agent.rules.engine import RuleEngine
from agent.rules.loader import DEFAULT_RULES, load_rules

if TYPE_CHECKING:  # pragma: no cover
    from agent.deployment import Deployment
    from agent.settings import Settings

_ZERO = "0x" + "0" * 40


@dataclass(frozen=True)
class Provided:
    """What the configured oracles provide: reading name -> oracle name, and a note on any assumption made."""

    features: dict[str, str]
    note: str | None = None


def provided_features(settings: Settings, deployment: Deployment | None = None) -> Provided:
    """The reading names the oracles of ``settings`` provide (``Oracle.provides`` of each).

    The price feed is ``agent.price_feed`` or the deployment's DevPriceFeed. Without a readable deployment record
    (``deployment`` None and ``chain.deployment`` missing) a price feed is assumed, and ``note`` says so.

    Raises:
        ConfigError: an ``[oracles]`` entry is misconfigured (as ``chrysalis run`` would report it).
    """
    from agent.deployment import COLLECTION, PRICE_FEED, ContractRecord, Deployment
    from agent.pipeline.inputs import build_oracles

    note = None
    if deployment is None:
        try:
            deployment = Deployment.load(settings.chain.deployment)
        except ChrysalisError as exc:
            note = f"{exc.message}: assuming the deployment has a price feed"
            stand_in = ContractRecord(address=_ZERO, abi="abi/none.json")
            deployment = Deployment(
                chain_id=1,
                network="(none)",
                contracts={COLLECTION: stand_in, PRICE_FEED: stand_in},
                deploy_block=0,
                deploy_block_hash="0x" + "0" * 64,
                deployer=_ZERO,
                agent=_ZERO,
            )
    oracles, _guard = build_oracles(settings, deployment)
    return Provided({name: oracle.name for oracle in oracles for name in oracle.provides}, note)


@dataclass(frozen=True)
class RulesCheck:
    """A rules file that passed: its engine, the path, and what the oracles provide."""

    path: Path
    engine: RuleEngine
    provided: Provided

    def to_json(self) -> dict[str, object]:
        spec = self.engine.spec
        return {
            "ok": True,
            "path": str(self.path),
            "traits": sorted(spec.traits),
            "facts": sorted(spec.facts),
            "features": sorted(spec.features),
            "provided": self.provided.features,
            "note": self.provided.note,
        }


def check_rules(
    settings: Settings, path: str | Path | None = None, *, deployment: Deployment | None = None
) -> RulesCheck:
    """Load ``path`` (default ``agent.rules``, else the shipped rules) against the configured oracles.

    Raises:
        RulesConfigError: every problem in the file, each with its rule and fix (a declared feature no oracle
            provides among them).
        NotFoundError: the file does not exist.
        ConfigError: the oracles are misconfigured.
    """
    provided = provided_features(settings, deployment)
    rules_path = Path(path) if path is not None else Path(settings.agent.rules or DEFAULT_RULES)
    engine = load_rules(rules_path, features=provided.features)
    return RulesCheck(rules_path, engine, provided)
