"""``chrysalis model verify-training``: train again from a receipt and compare, bit for bit.

The verifier loads the receipt, checks that it was made in the canonical configuration (CPU, float32, one torch
thread), loads the dataset and compares its root with the recorded one (naming the items whose bytes or labels
differ), finds the base model by the recorded weights digest, trains again with the recorded hyperparameters and
seed, comparing every recorded loss as it goes, and finally compares the weights sha256.

Outcomes (the command's exit code):

- ``match`` (0): same weights sha256, same data order, same loss curve.
- ``mismatch`` (1): a loss differs (the first divergent step is named; the run stops there) or the weights or the
  data order differ.
- ``cannot reproduce`` (2): the receipt was not made canonically (a GPU, another dtype or thread count), or the
  library versions or machine differ from the receipt's *and* the result does not match: versions are only a
  warning, because matching bits on other versions is still proof, while a mismatch there is no evidence of a
  false receipt.
- bad input (3, raised as errors): no receipt, another dataset (root differs), base model not found.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import ConfigError, NotFoundError
from agent.training.receipt import TrainingReceipt, library_versions, machine
from agent.training.result import data_order_sha256, loss_curve_sha256

MATCH, MISMATCH, CANNOT_REPRODUCE = 0, 1, 2


class DatasetMismatchError(ConfigError):
    """The dataset given is not the one the receipt records."""


@dataclass
class Verdict:
    """What verify-training found."""

    status: str  # match | mismatch | cannot reproduce
    code: int
    message: str
    weights_sha256: str | None = None
    recorded_weights_sha256: str | None = None
    first_divergent_step: int | None = None
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "weights_sha256": self.weights_sha256,
            "recorded_weights_sha256": self.recorded_weights_sha256,
            "first_divergent_step": self.first_divergent_step,
            "warnings": self.warnings,
        }


def dataset_differences(receipt: TrainingReceipt, ds: Any) -> list[str]:
    """Human lines naming how ``ds`` differs from the receipt's items (changed bytes, added, removed)."""
    recorded = {str(n): str(h) for n, h in receipt.dataset.get("items", [])}
    now = {it.name: it.sha256 for it in ds.items}
    out = [f"{n}: sha256 {now[n]}, recorded {h}" for n, h in recorded.items() if n in now and now[n] != h]
    out += [f"{n}: not in the receipt" for n in now if n not in recorded]
    out += [f"{n}: missing" for n in recorded if n not in now]
    return out


def _base_for(receipt: TrainingReceipt, base: str | Path | None, cache_dir: Path | None) -> Any:
    from agent.generate.image.embedded import SHIPPED_DIR
    from agent.training.sprites import resolve_base

    want = receipt.base["weights_sha256"]
    if base is None:
        if receipt.base.get("cid"):
            base = f"ipfs://{receipt.base['cid']}"
        else:
            import json

            shipped = json.loads((SHIPPED_DIR / "manifest.json").read_text())
            if shipped["weights_sha256"] != want:
                raise NotFoundError(
                    f"the receipt's base model {receipt.base['name']} (weights {want}) is not the shipped model "
                    "and has no CID",
                    hint="pass its directory with --base DIR",
                )
    b = resolve_base(base, cache_dir)
    if b.weights_sha256 != want:
        raise NotFoundError(
            f"base model {b.directory} has weights {b.weights_sha256}, the receipt's base {receipt.base['name']} "
            f"has {want}",
            hint="pass the base the receipt names with --base DIR (or ipfs://CID)",
        )
    return b


def verify_training(
    receipt_path: Path,
    dataset: str | Path,
    *,
    base: str | Path | None = None,
    cache_dir: Path | None = None,
    data_dir: Path | None = None,
    progress: Any = None,
) -> Verdict:
    """Re-train from ``receipt_path`` on ``dataset`` and compare (see the module docstring).

    Raises:
        DatasetMismatchError: the dataset root differs (naming the differing items). NotFoundError /
            ReceiptError: no receipt, base model not found. ConfigError: unknown hyperparameters.
    """
    from agent.training.adapters import TRAINERS
    from agent.training.sprites import TRAINER, FinetuneConfig, load_training_data, run, save_weights

    receipt = TrainingReceipt.load(Path(receipt_path))
    if receipt.trainer not in (TRAINER, *TRAINERS):
        raise ConfigError(
            f"receipt trainer {receipt.trainer!r} is not one of {', '.join((TRAINER, *TRAINERS))}",
            hint="verify-training replays the fine-tunes made by `chrysalis model train`",
        )
    if (receipt.device, receipt.dtype, receipt.threads) != ("cpu", "float32", 1):
        return Verdict(
            "cannot reproduce",
            CANNOT_REPRODUCE,
            f"the receipt was made on {receipt.device} / {receipt.dtype} / {receipt.threads} thread(s), not in the "
            "canonical configuration (cpu / float32 / 1 thread): its bits cannot be made again here",
            recorded_weights_sha256=receipt.weights_sha256,
        )
    warnings = []
    here = library_versions()
    diff = {k: (v, here.get(k)) for k, v in receipt.libraries.items() if here.get(k) != v}
    if diff:
        warnings.append(
            "library versions differ from the receipt's: "
            + ", ".join(f"{k} {a} (here {b})" for k, (a, b) in sorted(diff.items()))
        )
    if receipt.machine != machine():
        warnings.append(f"machine differs: receipt {receipt.machine}, here {machine()}")

    if receipt.trainer in TRAINERS:
        return _verify_adapter(receipt, dataset, base, cache_dir, data_dir, progress, warnings)
    config = FinetuneConfig.from_hyperparameters(receipt.hyperparameters)
    data = load_training_data(dataset, config, data_dir=data_dir)
    check_root(receipt, data.dataset)
    b = _base_for(receipt, base, cache_dir)

    recorded = {int(s): float(v) for s, v in receipt.loss_checkpoints}
    divergence: dict[str, Any] = {}

    def check(step: int, loss: float) -> bool:
        want = recorded.get(step)
        if want is not None and want != loss:
            divergence.update(step=step, want=want, got=loss)
            return False
        return True

    outcome = run(b, data, config, receipt.seed, progress=progress, check=check)
    if divergence:
        return _diverged(receipt, divergence["step"], divergence["got"], warnings)
    with tempfile.TemporaryDirectory(prefix="chrysalis-verify-") as tmp:
        weights = save_weights(outcome.unet, Path(tmp))
    problems = []
    if data_order_sha256(outcome.order) != receipt.data_order_sha256:
        problems.append("the data order differs")
    if loss_curve_sha256(outcome.losses) != receipt.loss_curve_sha256:
        problems.append("the loss curve digest differs")
    if weights != receipt.weights_sha256:
        problems.append(f"the weights differ: sha256 {weights}, recorded {receipt.weights_sha256}")
    return _compared(receipt, weights, problems, warnings)


def check_root(receipt: TrainingReceipt, ds: Any) -> None:
    """Raise :class:`DatasetMismatchError` naming the differing items unless ``ds`` has the receipt's root."""
    if ds.root == receipt.dataset["root"]:
        return
    lines = dataset_differences(receipt, ds)
    detail = ("; ".join(lines[:10]) + (f" (and {len(lines) - 10} more)" if len(lines) > 10 else "")) or (
        "the items' bytes match, so labels, salts or the mode differ"
    )
    raise DatasetMismatchError(
        f"dataset {ds.path} has root {ds.root}, the receipt records {receipt.dataset['root']}: {detail}",
        hint="verify against the exact dataset the model was trained on (restore the changed items)",
    )


def _verify_adapter(
    receipt: TrainingReceipt,
    dataset: str | Path,
    base: str | Path | None,
    cache_dir: Path | None,
    data_dir: Path | None,
    progress: Any,
    warnings: list[str],
) -> Verdict:
    """verify-training of a LoRA receipt (:func:`agent.training.adapters.replay`)."""
    from agent.training.adapters import replay
    from agent.training.sprites import open_dataset

    ds = open_dataset(dataset, data_dir, resolution=None)
    check_root(receipt, ds)
    got = replay(receipt, ds, None if base is None else str(base), cache_dir, progress=progress)
    if got.diverged_at is not None:
        return _diverged(receipt, got.diverged_at, got.losses[-1], warnings)
    problems = []
    if got.data_order_sha256 != receipt.data_order_sha256:
        problems.append("the data order differs")
    if loss_curve_sha256(got.losses) != receipt.loss_curve_sha256:
        problems.append("the loss curve digest differs")
    if got.weights_sha256 != receipt.weights_sha256:
        problems.append(f"the weights differ: sha256 {got.weights_sha256}, recorded {receipt.weights_sha256}")
    return _compared(receipt, got.weights_sha256, problems, warnings)


def _diverged(receipt: TrainingReceipt, step: int, got: float, warnings: list[str]) -> Verdict:
    want = {int(s): float(v) for s, v in receipt.loss_checkpoints}[step]
    status, code = _failed(warnings)
    lo = max(1, step - receipt.loss_every + 1)
    where = f"step {step}" if lo == step else f"between steps {lo} and {step}"
    return Verdict(
        status,
        code,
        f"the loss diverged first at {where}: recorded {want!r}, got {got!r}" + _versions_note(warnings),
        recorded_weights_sha256=receipt.weights_sha256,
        first_divergent_step=step,
        warnings=warnings,
    )


def _compared(
    receipt: TrainingReceipt, weights: str | None, problems: list[str], warnings: list[str]
) -> Verdict:
    if problems:
        status, code = _failed(warnings)
        return Verdict(
            status, code, "; ".join(problems) + _versions_note(warnings), weights, receipt.weights_sha256,
            warnings=warnings,
        )  # fmt: skip
    return Verdict(
        "match",
        MATCH,
        f"weights sha256 {weights} match the receipt bit for bit ({receipt.steps} steps, every recorded loss equal)",
        weights,
        receipt.weights_sha256,
        warnings=warnings,
    )


def _failed(warnings: list[str]) -> tuple[str, int]:
    return ("cannot reproduce", CANNOT_REPRODUCE) if warnings else ("mismatch", MISMATCH)


def _versions_note(warnings: list[str]) -> str:
    return " (" + "; ".join(warnings) + ": a difference is expected here)" if warnings else ""
