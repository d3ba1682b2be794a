"""The portable noise (``chrysalis-noise/1``): Python and ``renderer/noise.js`` against the shared vector file, Philox
against Random123's known answers, fdlibm's logarithm against the platform's, and the output's distribution."""

from __future__ import annotations

import hashlib
import json
import math
import runpy
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from agent.errors import ConfigError
from agent.generate.portable import SCHEME, fdlibm_log, noise, philox4x32_10, portable_randn

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "generate" / "data" / "portable_noise_vectors.json"
SCRIPT = runpy.run_path(str(ROOT / "scripts" / "portable_noise_vectors.py"))
NODE_CHECK = ROOT / "tests" / "generate" / "portable_noise_check.mjs"

# Random123's known-answer vectors for Philox4x32 (counter words, key words -> output), as cut from its
# kat_vectors file into DEShawResearch/Random123-Boost libs/random/test/test_philox.cpp.
RANDOM123_KAT = [
    (10, "00000000 00000000 00000000 00000000", "00000000 00000000", "6627e8d5 e169c58d bc57ac4c 9b00dbd8"),
    (10, "ffffffff ffffffff ffffffff ffffffff", "ffffffff ffffffff", "408f276d 41c83b0e a20bc7c6 6d5451fd"),
    (10, "243f6a88 85a308d3 13198a2e 03707344", "a4093822 299f31d0", "d16cfe09 94fdcceb 5001e420 24126ea1"),
    (7, "00000000 00000000 00000000 00000000", "00000000 00000000", "5f6fb709 0d893f64 4f121f81 4f730a48"),
    (7, "ffffffff ffffffff ffffffff ffffffff", "ffffffff ffffffff", "5207ddc2 45165e59 4d8ee751 8c52f662"),
    (7, "243f6a88 85a308d3 13198a2e 03707344", "a4093822 299f31d0", "4dfccaba 190a87f0 c47362ba b6b5242a"),
]


def _words(text: str) -> list[int]:
    return [int(w, 16) for w in text.split()]


@pytest.fixture(scope="module")
def vectors() -> dict:
    return json.loads(VECTORS.read_text())


def test_vector_file_is_what_python_computes(vectors):
    assert vectors["scheme"] == SCHEME == "chrysalis-noise/1"
    assert len(vectors["noise"]["seeds"]) >= 50
    assert {"0", "1", str(2**32 - 1), str(2**32), str(2**64 - 1)} <= {
        s["seed"] for s in vectors["noise"]["seeds"]
    }
    assert VECTORS.stat().st_size < 50_000
    assert SCRIPT["build"]() == vectors, (
        "the vectors drifted: run scripts/portable_noise_vectors.py and review why"
    )


@pytest.mark.parametrize(("rounds", "counter", "key", "expected"), RANDOM123_KAT)
def test_philox_matches_random123_known_answers(rounds, counter, key, expected):
    ctr, k = np.array(_words(counter), dtype=np.uint64), tuple(_words(key))
    assert noise._philox(ctr, k, rounds).tolist() == _words(expected)
    if rounds == 10:
        assert philox4x32_10(_words(counter), _words(key)).tolist() == _words(expected)


def test_philox_on_a_batch_of_counters_equals_one_at_a_time():
    counters = np.array([_words(c) for _, c, _, _ in RANDOM123_KAT[:3]] + [[7, 0, 1, 2]], dtype=np.uint32)
    key = [0xA4093822, 0x299F31D0]
    batch = philox4x32_10(counters, key)
    assert batch.dtype == np.uint32 and batch.shape == (4, 4)
    assert [row.tolist() for row in batch] == [philox4x32_10(c, key).tolist() for c in counters]


def test_noise_is_a_prefix_stream_in_c_order():
    big = portable_randn(2**64 - 1, (5001,))
    shaped = portable_randn(2**64 - 1, (3, 32, 32))
    assert shaped.dtype == np.float32 and shaped.shape == (3, 32, 32)
    assert np.array_equal(shaped.reshape(-1), big[:3072])
    assert np.array_equal(
        portable_randn(2**64 - 1, (7,)), big[:7]
    )  # odd: the last pair's second value dropped
    assert portable_randn(5, (0, 4)).shape == (0, 4)
    assert not np.array_equal(
        portable_randn(2**32, (16,)), portable_randn(1, (16,))
    )  # the high key word counts


def test_noise_drawn_in_many_short_chunks_is_the_same(monkeypatch):
    whole = portable_randn(99, (1000,))
    monkeypatch.setattr(noise, "_ACCEPT", 50.0)  # 16-odd attempts per chunk: the refill loop runs many times
    assert np.array_equal(portable_randn(99, (1000,)), whole)


def test_noise_is_standard_normal():
    x = portable_randn(20240611, (100_000,)).astype(np.float64)
    assert np.isfinite(x).all()
    assert abs(x.mean()) < 0.02
    assert abs(x.std() - 1.0) < 0.02
    assert abs((np.abs(x) < 1).mean() - 0.6827) < 0.01  # the shape, not only two moments
    assert abs((np.abs(x) > 2).mean() - 0.0455) < 0.005
    assert abs(np.corrcoef(x[:-1], x[1:])[0, 1]) < 0.02  # the two values of a pair are independent


def test_log_constants_have_fdlibms_bit_patterns():
    for name, (value, bits) in noise._LOG_CONSTANTS.items():
        assert int(np.float64(value).view(np.uint64)) == bits, name


def test_fdlibm_log_is_within_one_ulp_of_the_platform_log_and_equals_the_stored_bits(vectors):
    xs = SCRIPT["log_inputs"]()
    ys = fdlibm_log(xs)
    platform = np.array([math.log(x) for x in xs])
    ulps = np.abs(ys.view(np.int64) - platform.view(np.int64))
    assert ulps.max() <= 1  # fdlibm's bound; the platform's may be correctly rounded where fdlibm is not
    differ = int(np.count_nonzero(ulps))
    assert differ < len(xs) // 20, (
        f"{differ} of {len(xs)} differ from math.log: more than a < 1 ulp log should"
    )
    # The bits that count are fdlibm's, stored in the vector file (the JS side is held to the same).
    assert hashlib.sha256(ys.astype("<f8").tobytes()).hexdigest() == vectors["log"]["outputs_sha256"]


def test_fdlibm_log_special_values():
    with np.errstate(invalid="ignore"):
        got = fdlibm_log([0.0, -0.0, -1.0, np.inf, -np.inf, np.nan, 1.0, 5e-324, 2.0**-1074 * 3])
    assert got[0] == got[1] == -np.inf
    assert np.isnan(got[2]) and np.isnan(got[4]) and np.isnan(got[5])
    assert got[3] == np.inf and got[6] == 0.0
    assert got[7] == math.log(5e-324) and abs(got[8] - math.log(2.0**-1074 * 3)) <= 1e-12
    assert fdlibm_log(2.0).shape == () and fdlibm_log(2.0) == math.log(2.0)


@pytest.mark.parametrize("seed", [-1, 2**64, True, 1.0, "7"])
def test_bad_seed_is_a_config_error(seed):
    with pytest.raises(ConfigError, match="not an unsigned 64-bit integer") as err:
        portable_randn(seed, (4,))
    assert err.value.hint


@pytest.mark.parametrize("shape", [[3, 4], (3, -1), (2.0,), (True,)])
def test_bad_shape_is_a_config_error(shape):
    with pytest.raises(ConfigError, match="not a tuple of non-negative ints") as err:
        portable_randn(1, shape)
    assert err.value.hint


@pytest.mark.parametrize(
    ("counter", "key"), [([0, 0, 0], [0, 0]), ([0, 0, 0, 2**32], [0, 0]), ([0] * 4, [-1, 0])]
)
def test_bad_philox_words_are_a_config_error(counter, key):
    with pytest.raises(ConfigError, match="unsigned 32-bit integers"):
        philox4x32_10(counter, key)


def _node_check(vector_file: Path) -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the JS side (renderer/noise.js) cannot be checked")
    kat = [[c.split(), k.split(), r, e.split()] for r, c, k, e in RANDOM123_KAT]
    proc = subprocess.run(
        [node, str(NODE_CHECK), str(vector_file)],
        input=json.dumps(kat),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_javascript_gives_the_same_bits(vectors):
    report = _node_check(VECTORS)
    assert report["scheme"] == SCHEME
    assert report["kat_failures"] == []
    assert report["noise_checked"] == len(vectors["noise"]["seeds"])
    assert report["noise_failures"] == []
    assert report["log"]["inputs_match"] and report["log"]["outputs_match"]
    assert report["log"]["sample_failures"] == []


def test_the_javascript_check_fails_on_a_wrong_vector(vectors, tmp_path):
    tampered = json.loads(json.dumps(vectors))
    entry = tampered["noise"]["seeds"][3]
    entry["head"][5] = f"{int(entry['head'][5], 16) ^ 1:08x}"  # one float32 off by one ulp
    tampered["log"]["outputs_sha256"] = "0" * 64
    path = tmp_path / "vectors.json"
    path.write_text(json.dumps(tampered))
    report = _node_check(path)
    assert [f["seed"] for f in report["noise_failures"]] == [entry["seed"]]
    assert report["log"]["outputs_match"] is False
