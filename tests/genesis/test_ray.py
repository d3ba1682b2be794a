"""A genesis made on a real Ray cluster (``ray start --head``, 2 CPUs, on this machine): the same files as one made
locally, resumable after an interruption, and clear errors for an address that does not answer or a cluster
without the GPU the models ask for."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.genesis.ledger import LEDGER_NAME, Ledger
from agent.genesis.run import GenesisResult, run_genesis
from tests.genesis.conftest import model_env, small_table
from tests.support.cli import invoke_cli
from tests.support.waiting import eventually

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SIZE = 16
BATCH = 4
SEED = "seed-ray"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A 2-CPU Ray head on this machine, in a temporary folder, stopped (its ``--block`` process sent SIGTERM,
    which stops the processes it started) at the end. Yields its address."""
    port = _free_port()
    temp = tmp_path_factory.mktemp("ray")
    ray_cli = Path(sys.executable).with_name("ray")
    log = (temp / "head.log").open("wb")
    # two heads on one machine (pytest-xdist workers) must not share ports: each gets its own range of worker
    # ports (a driver given a port another cluster's worker holds is aborted by Ray) and its own agent ports
    n = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    ports = ["--port", str(port), "--min-worker-port", str(20_000 + 2_000 * n)]
    ports += [
        "--max-worker-port",
        str(21_999 + 2_000 * n),
        "--dashboard-agent-listen-port",
        str(_free_port()),
    ]
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", "--num-cpus", "2", "--num-gpus", "0", *ports]
        + ["--temp-dir", str(temp), "--include-dashboard", "false", "--disable-usage-stats"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=os.environ | {"RAY_USAGE_STATS_ENABLED": "0"},
    )
    try:
        eventually(lambda: head.poll() is not None or _answers(port), 120, "the Ray head to listen")
        assert head.poll() is None, (temp / "head.log").read_text()
        yield f"127.0.0.1:{port}"
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:  # pragma: no cover - a head that ignores SIGTERM
            head.kill()
            head.wait()
        log.close()


def _genesis(out: Path, models, *, workers: int = 2, ray: str | None = None) -> GenesisResult:
    """The genesis every comparison here makes: the small table, SIZE items in batches of BATCH, no sheet."""
    return run_genesis(
        small_table(), SIZE, SEED, out, models=models, batch_size=BATCH, workers=workers, sheet_size=0,
        progress=False, ray=ray,
    )  # fmt: skip


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, models) -> tuple[Path, GenesisResult]:
    """The reference: the same genesis made in this process (one torch thread, like each actor)."""
    out = tmp_path_factory.mktemp("local") / "g"
    result = _genesis(out, models, workers=1)
    return out, result


def _assert_same_files(out: Path, ref: Path) -> None:
    """Every file of ``ref`` but the ledger database is in ``out`` with the same bytes; the ledgers' rows match."""
    names = sorted(
        str(p.relative_to(ref)) for p in ref.rglob("*") if p.is_file() and not p.name.startswith(LEDGER_NAME)
    )
    assert len([n for n in names if n.startswith("images/")]) == SIZE
    for name in names:
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    with Ledger.read(out) as a, Ledger.read(ref) as b:
        assert list(a.outputs()) == list(b.outputs())
        assert a.params()["weights"] == b.params()["weights"]


def test_a_genesis_on_ray_is_the_same_as_one_made_locally(ray_head, local, tmp_path, models) -> None:
    ref, first = local
    out = tmp_path / "ray"
    result = _genesis(out, models, ray=ray_head)
    assert result.provenance_sha256 == first.provenance_sha256 and result.generated == SIZE
    t = result.timings
    assert (t.engine, t.cluster, t.workers, t.threads) == ("ray", ray_head, 2, 1)
    assert t.images_cpu > 0 and t.lore_cpu > 0 and t.load_models > 0
    _assert_same_files(out, ref)


class _Stop(Exception):
    """Stops a run after its first batch."""


def test_an_interrupted_ray_run_resumes_on_ray(ray_head, local, tmp_path, models, monkeypatch) -> None:
    """Stopped after its first batch (an error in the genesis process), the run is resumed on the cluster with
    that batch kept."""
    from agent.genesis import ray_engine

    ref, first = local
    out = tmp_path / "partial"
    real = ray_engine.run_on_ray

    def first_batch_then_stop(*args, **kwargs):  # type: ignore[no-untyped-def]
        for result in real(*args, **kwargs):
            yield result
            raise _Stop

    def run() -> GenesisResult:
        return _genesis(out, models, ray=ray_head)

    monkeypatch.setattr(ray_engine, "run_on_ray", first_batch_then_stop)
    with pytest.raises(_Stop):
        run()
    with Ledger.read(out) as ledger:
        assert ledger.done_count() == BATCH
    monkeypatch.setattr(ray_engine, "run_on_ray", real)
    resumed = run()
    assert (resumed.resumed, resumed.generated) == (BATCH, SIZE - BATCH)
    assert resumed.provenance_sha256 == first.provenance_sha256
    _assert_same_files(out, ref)


def test_the_cli_renders_on_ray(ray_head, local, tmp_path, models, monkeypatch, capsys) -> None:
    """``chrysalis genesis --ray HOST:PORT`` resumes a local run's copy on the cluster and says where it ran."""
    ref, first = local
    out = tmp_path / "g"
    shutil.copytree(ref, out)
    (out / "images" / "5.png").unlink()  # batch 1 is made again, on the cluster
    for key, value in model_env(models).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CHRYSALIS_GATES__ENABLED", "false")  # like the reference, which ran no quality gates
    monkeypatch.delenv("CHRYSALIS_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "traits.toml").write_text(_TABLE_TOML)
    r = invoke_cli(
        capsys,
        "genesis",
        "--size",
        str(SIZE),
        "--traits",
        "traits.toml",
        "--out",
        str(out),
        "--ray",
        ray_head,
        "--sheet",
        "0",
        "--no-progress",
    )
    assert r.code == 0, r.text
    assert f"generated {BATCH}, already done {SIZE - BATCH}" in r.text
    assert f"Ray cluster {ray_head}: 1 actor(s) x 1 torch thread(s)" in r.text
    assert first.provenance_sha256 in r.text
    _assert_same_files(out, ref)


def test_an_address_that_does_not_answer_is_a_config_error(tmp_path, models, capsys, monkeypatch) -> None:
    address = f"127.0.0.1:{_free_port()}"
    with pytest.raises(ConfigError) as caught:
        run_genesis(
            small_table(), 8, SEED, tmp_path / "g", models=models, batch_size=4, progress=False, ray=address
        )
    assert address in caught.value.message and "ray start --head" in (caught.value.hint or "")

    monkeypatch.chdir(tmp_path)
    for key, value in model_env(models).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("CHRYSALIS_CONFIG", raising=False)
    (tmp_path / "traits.toml").write_text(_TABLE_TOML)
    r = invoke_cli(
        capsys,
        "genesis",
        "--size",
        "8",
        "--traits",
        "traits.toml",
        "--out",
        "c",
        "--ray",
        address,
        "--no-progress",
    )
    assert r.code != 0 and f"no Ray cluster answers at {address}" in r.text and "ray start --head" in r.text
    assert "Traceback" not in r.text
    with pytest.raises(ConfigError, match="Ray Client address"):
        run_genesis(
            small_table(),
            8,
            SEED,
            tmp_path / "h",
            models=models,
            batch_size=4,
            progress=False,
            ray="ray://x:1",
        )


def test_cuda_models_on_a_cluster_without_gpu_is_a_config_error(ray_head, tmp_path, models) -> None:
    with pytest.raises(ConfigError) as caught:
        run_genesis(
            small_table(),
            8,
            SEED,
            tmp_path / "g",
            models=models.model_copy(update={"device": "cuda"}),
            batch_size=4,
            progress=False,
            ray=ray_head,
        )
    assert "has no GPU" in caught.value.message and ray_head in caught.value.message
    assert "models.device" in (caught.value.hint or "")


_TABLE_TOML = """
name = "Testling"
unique = ["mood", "element", "background"]
[lore.facts]
origin = "newly hatched"
[traits.mood]
weights = { serene = 3, radiant = 3, fierce = 2, gloomy = 2 }
[traits.element]
weights = { fire = 1, water = 1, earth = 1, air = 1 }
[traits.background]
image = false
weights = { dawn = 2, dusk = 2, void = 1, reef = 1, moss = 1, ash = 1 }
"""


def test_without_ray_installed_it_is_a_config_error(tmp_path, models, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ConfigError, match="needs Ray") as caught:
        run_genesis(
            small_table(), 8, SEED, tmp_path / "g", models=models, batch_size=4, progress=False, ray="auto"
        )
    assert "pip install 'ray[data]==2.52.1'" in (caught.value.hint or "")
