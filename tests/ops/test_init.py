"""``chrysalis init`` writes every setting, commented, and what it writes loads back as the defaults; a wrong
config file is a clear error naming the key or line."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from agent.errors import ConfigError
from agent.ops.config_template import render_config, toml_value
from agent.settings import Section, Settings, load_settings


def _leaf_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str]]:
    """(table, key) of every scalar setting; nested models become tables."""
    out = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out.extend(_leaf_fields(annotation, f"{prefix}{name}."))
        else:
            out.append((prefix.rstrip("."), name))
    return out


def test_init_writes_a_config_that_loads_back_as_the_defaults(workdir: Path, chrysalis) -> None:
    result = chrysalis("init")
    assert result.code == 0, result.err
    path = workdir / "chrysalis.toml"
    assert "wrote chrysalis.toml" in result.text
    loaded = load_settings(path)
    assert loaded.model_dump() == Settings.model_validate({}).model_dump()


def test_every_setting_appears_with_its_description_and_env_var() -> None:
    text = render_config()
    tables = dict.fromkeys(re.findall(r"^\[(\w+)\]$", text, flags=re.MULTILINE))
    for table, key in _leaf_fields(Settings):
        if table:
            assert table in tables, f"[{table}] missing"
            section = text.split(f"\n[{table}]\n", 1)[1].split("\n[", 1)[0]
        else:
            section = text.split("\n[", 1)[0]
        assert (
            re.search(rf"^(# )?{key} = ", section, flags=re.MULTILINE) or f"[[{table}.{key}]]" in section
        ), f"{table}.{key} is not in the generated config"
        env = "CHRYSALIS_" + (f"{table}__{key}" if table else key).upper()
        if key != "pinning_services":
            assert env in " ".join(section.split()), f"{table}.{key}: env var {env} not documented"


def test_every_setting_has_a_description() -> None:
    # init turns descriptions into the file's comments: a setting without one would be written bare.
    missing = []
    for table, key in _leaf_fields(Settings):
        model = Settings if not table else Settings.model_fields[table].annotation
        if not model.model_fields[key].description:
            missing.append(f"{table}.{key}".lstrip("."))
    assert missing == [], f"settings without a description: {missing}"


def test_every_section_rejects_unknown_keys() -> None:
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            assert issubclass(annotation, Section), (
                f"[{name}] ({annotation.__name__}) does not derive from Section"
            )
            assert annotation.model_config.get("extra") == "forbid"


def test_an_edited_value_round_trips(workdir: Path, chrysalis) -> None:
    assert chrysalis("init").code == 0
    path = workdir / "chrysalis.toml"
    text = path.read_text()
    text = text.replace('rpc_url = "http://127.0.0.1:8545"', 'rpc_url = "http://node.example:8545"')
    text = text.replace("# ws_url = ", 'ws_url = "ws://node.example:8546" # ', 1)
    text = text.replace('format = "text"', 'format = "json"')
    path.write_text(text)
    loaded = load_settings(path)
    assert loaded.chain.rpc_url == "http://node.example:8545"
    assert loaded.chain.ws_url == "ws://node.example:8546"
    assert loaded.log.format == "json"


def test_init_refuses_to_overwrite_without_force(workdir: Path, chrysalis) -> None:
    path = workdir / "chrysalis.toml"
    path.write_text("# mine\n")
    result = chrysalis("init")
    assert result.code == 1
    assert "chrysalis.toml already exists; not overwriting it" in result.text
    assert "hint: pass --force" in result.text
    assert path.read_text() == "# mine\n"
    assert chrysalis("init", "--force").code == 0
    assert "[chain]" in path.read_text()


def test_init_into_a_directory_and_a_missing_directory(workdir: Path, chrysalis) -> None:
    (workdir / "conf").mkdir()
    assert chrysalis("init", "conf").code == 0
    assert (workdir / "conf" / "chrysalis.toml").is_file()
    result = chrysalis("init", "nowhere/chrysalis.toml")
    assert result.code == 1
    assert "directory nowhere does not exist" in result.text


def test_toml_values_parse_back() -> None:
    for value in ["plain", 'quote " and \\ backslash', "tab\tnewline\n", "ünïcode ✓", 0, -3, 2.5, 1e-9, True, False,
                  ["a", "b"], [1, 2]]:  # fmt: skip
        assert tomllib.loads(f"v = {toml_value(value)}")["v"] == value
    with pytest.raises(TypeError):
        toml_value(object())


# -- wrong configuration: clear errors ------------------------------------------------------------------------


def test_a_misspelt_key_is_named(workdir: Path, chrysalis) -> None:
    (workdir / "chrysalis.toml").write_text('[chain]\nrpc_ulr = "http://x"\nconfirmations = -1\n')
    result = chrysalis("status")
    assert result.code == 1
    assert "invalid configuration in chrysalis.toml" in result.text
    assert "chain.rpc_ulr: Extra inputs are not permitted" in result.text
    assert "chain.confirmations: Input should be greater than or equal to 0 (got -1)" in result.text
    assert "hint: fix the keys above" in result.text
    assert "Traceback" not in result.err


def test_malformed_toml_names_the_line(workdir: Path, chrysalis) -> None:
    (workdir / "broken.toml").write_text('[chain]\nrpc_url = "http://x\n')
    result = chrysalis("--config", "broken.toml", "status")
    assert result.code == 1
    assert "config file broken.toml is not valid TOML" in result.text
    assert "line 2" in result.text
    assert "Traceback" not in result.err


def test_the_config_option_is_for_its_command_line_only(workdir: Path, chrysalis) -> None:
    (workdir / "other.toml").write_text('[database]\nurl = "sqlite:///elsewhere.db"\n')
    result = chrysalis("--config", "other.toml", "status")
    assert result.code == 1 and "no agent database at elsewhere.db" in result.text  # the file was read
    assert "CHRYSALIS_CONFIG" not in os.environ  # nothing exported for the rest of the process
    assert load_settings().database.url != "sqlite:///elsewhere.db"
    assert load_settings(workdir / "other.toml").database.url == "sqlite:///elsewhere.db"
    assert "CHRYSALIS_CONFIG" not in os.environ


def test_a_missing_config_file(workdir: Path, chrysalis) -> None:
    result = chrysalis("--config", "nope.toml", "status")
    assert result.code == 1
    assert "config file nope.toml does not exist" in result.text
    assert "chrysalis init" in result.text


def test_load_settings_error_is_a_config_error(workdir: Path) -> None:
    (workdir / "chrysalis.toml").write_text("[metrics]\nport = 70000\n")
    with pytest.raises(ConfigError, match="metrics.port"):
        load_settings(workdir / "chrysalis.toml")


def test_every_placeholder_is_valid_once_uncommented(workdir: Path) -> None:
    """The header says 'remove the "# " to set them': doing so for every unset setting, and for every [[...]]
    example table, must load (the two refresh triggers are alternatives: the example keeps cron)."""
    lines = render_config().splitlines()
    setting = re.compile(r"^# (\[\[[\w.]+\]\]$|\w+ = )")
    uncommented = []
    for line in lines:
        if setting.match(line) and not line.startswith("# price_change_pct = "):
            uncommented.append(line[2:])
        else:
            uncommented.append(line)
    assert sum(a != b for a, b in zip(lines, uncommented, strict=True)) > 40
    path = workdir / "all.toml"
    path.write_text("\n".join(uncommented) + "\n")
    loaded = load_settings(path)
    assert loaded.models.image_steps == 30 and loaded.models.image_guidance == 7.5
    assert loaded.chain.rpc_max_rps == 25.0 and loaded.chain.ws_url == "ws://127.0.0.1:8545"
    assert loaded.oracles.guard == {"price.answer": {"min": 100, "max": 1e6, "max_age_s": 3600}}
    assert loaded.oracles.eth_call[0].decimals == 18 and loaded.oracles.http[0].fields == {
        "usd": "$.ethereum.usd"
    }
    assert loaded.refresh.policies[0].cron == "0 0 * * *"
    assert loaded.ipfs.pinning_services[0].name == "pinata"


def test_no_description_line_looks_like_a_setting() -> None:
    """A description wrapped onto '# key = ...' or '# [table]' would invite uncommenting prose."""
    for line in render_config().splitlines():
        if re.match(r"^# \w+ = ", line):
            tomllib.loads(line[2:])  # a setting, not a sentence
        elif line.startswith("# ["):
            assert re.fullmatch(r"# \[\[\w+\.\w+\]\]", line), line


def test_init_with_dev_credentials_writes_them_and_a_config_that_signs(workdir: Path, chrysalis) -> None:
    from agent.credentials import ContentCredentials, inspect_png

    result = chrysalis("init", "--dev-credentials")
    assert result.code == 0, result.text
    creds = workdir / ".chrysalis" / "credentials"
    for name, mode in (("signer.key", 0o600), ("ca.key", 0o600), ("chain.pem", None), ("ca.pem", None)):
        assert (creds / name).is_file(), name
        if mode is not None:
            assert (creds / name).stat().st_mode & 0o777 == mode, name
    assert "untrusted" in result.text and "[credentials] set to the new files" in result.text
    settings = load_settings(workdir / "chrysalis.toml")
    assert settings.credentials.key_file == Path(".chrysalis/credentials/signer.key")
    assert settings.credentials.trust_anchors == Path(".chrysalis/credentials/ca.pem")
    signer = ContentCredentials.from_settings(settings.credentials)  # checks the files and signs a test image
    assert signer.trust_anchors_pem is not None

    # an existing config is never changed: the lines to add are printed; existing credentials need --force
    before = (workdir / "chrysalis.toml").read_text()
    again = chrysalis("init", "--dev-credentials")
    assert again.code == 1 and "already exists; not overwriting development credentials" in again.text
    other = chrysalis("init", "--dev-credentials", "--credentials-dir", "keys/c2pa")
    assert other.code == 0, other.text
    assert (workdir / "chrysalis.toml").read_text() == before
    assert "add these lines to it" in other.text
    assert (
        '[credentials]\nkey_file = "keys/c2pa/signer.key"\ncertificate_chain = "keys/c2pa/chain.pem"'
        in other.out
    )
    assert tomllib.loads(other.out[other.out.index("[credentials]") :])["credentials"]["trust_anchors"] == (
        "keys/c2pa/ca.pem"
    )
    assert chrysalis("init", "--dev-credentials", "--credentials-dir", "keys/c2pa", "--force").code == 0
    assert (workdir / "chrysalis.toml").read_text() == before

    # a damaged certificate is a clear error, not a traceback, wherever the credentials are loaded
    chain = creds / "chain.pem"
    chain.write_text(chain.read_text().replace("MII", "MXX", 1))
    with pytest.raises(ConfigError, match="certificate 1 of 2 in the C2PA certificate chain .* is malformed"):
        ContentCredentials.from_settings(settings.credentials)
    assert inspect_png(b"\x89PNG\r\n\x1a\n").present is False
