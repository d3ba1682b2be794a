"""Every contract under ``contracts/`` is reachable as ``project.<Name>``, wherever the clone lives.

Regression: eth-ape 0.8.51 walks at most 500 files of the contracts folder (``SourceManager._all_files``). When
OpenZeppelin was an Ape dependency, a build in a clone under the system temp directory unpacked its 507 files into
``contracts/.cache``, and Ape then lost contracts (``project.DevPriceFeed`` raised AttributeError). OpenZeppelin now
resolves from ``node_modules`` through the import remapping, so nothing is ever unpacked into ``contracts/``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = ROOT / "contracts"
# `contract X`, `abstract contract X`, `library X`, `interface X` at the start of a line.
DECLARATION = re.compile(r"^\s*(?:abstract\s+)?(?:contract|library|interface)\s+([A-Za-z_]\w*)", re.MULTILINE)


def declared_contracts(folder: Path) -> set[str]:
    names: set[str] = set()
    for source in folder.rglob("*.sol"):
        names.update(DECLARATION.findall(source.read_text()))
    return names


def test_the_contracts_folder_holds_only_our_sources() -> None:
    """No dependency is unpacked where Ape walks (its walk stops at 500 files)."""
    files = [p for p in CONTRACTS.rglob("*") if p.is_file()]
    unpacked = [p for p in files if ".cache" in p.relative_to(CONTRACTS).parts]
    assert not unpacked, f"a dependency was unpacked into contracts/.cache: {unpacked[:3]}"
    assert len(files) < 100, f"{len(files)} files under contracts/"


def test_every_declared_contract_is_reachable_as_a_project_attribute(project) -> None:
    names = declared_contracts(CONTRACTS)
    assert {"LivingCollection", "DevPriceFeed", "CIDv1Harness", "URIStorageBaseline"} <= names
    missing = []
    for name in sorted(names):
        try:
            getattr(project, name)
        except AttributeError:
            missing.append(name)
    assert not missing, f"not reachable as project.<Name>: {missing}"


@pytest.mark.slow
def test_a_clone_under_the_temp_directory_compiles_every_contract(tmp_path: Path) -> None:
    """Ape compiles a project under the system temp directory in place (no isolated copy): the case that once
    unpacked OpenZeppelin into ``contracts/.cache``. A copy of the project there must still expose every contract."""
    assert str(tmp_path.resolve()).startswith(str(Path(tempfile.gettempdir()).resolve()))
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copytree(CONTRACTS, clone / "contracts")
    shutil.copy(ROOT / "ape-config.yaml", clone / "ape-config.yaml")
    (clone / "node_modules").symlink_to(ROOT / "node_modules")
    env = dict(os.environ, APE_DATA_FOLDER=str(tmp_path / "ape-data"), SOLCX_BINARY_PATH=str(ROOT / ".solcx"))
    script = (
        "import re, sys\n"
        "from pathlib import Path\n"
        "from ape import project\n"
        "project.load_contracts()\n"
        "names = set()\n"
        "for p in Path('contracts').rglob('*.sol'):\n"
        f"    names.update(re.findall({DECLARATION.pattern!r}, p.read_text(), re.M))\n"
        "missing = [n for n in sorted(names) if project.get(n) is None]\n"
        "print('missing:', missing)\n"
        "sys.exit(1 if missing else 0)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=clone, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "missing: []" in proc.stdout
    # ape-solidity still makes an empty contracts/.cache; nothing may be unpacked into it.
    assert len([p for p in (clone / "contracts").rglob("*") if p.is_file()]) == len(
        [p for p in CONTRACTS.rglob("*") if p.is_file()]
    )
