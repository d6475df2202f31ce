"""`python -m audiolm.main` as a user runs it: --mode=describe prints the table, overrides change
the described model, bad overrides and bad config args fail clearly (non-zero exit, the field
named, nothing traced or compiled). One subprocess per case."""

import functools
import os
import re
import subprocess
import sys

import pytest

from audiolm import config as config_lib
from audiolm.presets.experiment import load_experiment_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "--config=configs/thinker_talker.py:variant=tiny"


@functools.lru_cache(maxsize=None)
def _launch(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    return subprocess.run([sys.executable, "-m", "audiolm.main", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _expected_table(config, capsys):
    text = config_lib.print_description(config_lib.describe(config))
    capsys.readouterr()
    return text


def _rows(stdout):
    rows = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and re.fullmatch(r"[\d,]+", parts[1]):
            rows[parts[0]] = tuple(int(p.replace(",", "")) for p in parts[1:])
    return rows


def _frames(stderr):
    """Source files of the traceback frames printed on stderr."""
    return re.findall(r'File "([^"]+)", line \d+', stderr)


def _assert_nothing_traced(stderr):
    frames = _frames(stderr)
    assert not [f for f in frames if re.search(r"/(jax|jaxlib|flax)/", f)], frames
    assert "XlaRuntimeError" not in stderr and "TracerArrayConversionError" not in stderr


def test_describe_prints_the_table(capsys):
    proc = _launch(TINY, "--mode=describe")
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = _expected_table(load_experiment_config("configs/thinker_talker.py", "variant=tiny"), capsys)
    assert proc.stdout.strip() == want.strip()
    rows = _rows(proc.stdout)
    assert list(rows) == ["aut", "thinker", "talker", "talker_code_predictor", "code2wav",
                          "TOTAL"]
    total = rows.pop("TOTAL")
    assert total == tuple(sum(r[i] for r in rows.values()) for i in range(3))
    assert total[0] == 351_793  # the tiny preset's parameter count (from describe())
    assert proc.stdout.splitlines()[0] == "family: thinker_talker"
    assert "bytes at bf16:" in proc.stdout


def test_override_changes_the_described_count(capsys):
    base = _rows(_launch(TINY, "--mode=describe").stdout)
    proc = _launch(TINY, "--mode=describe", "--config.model.thinker.num_layers=6")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(proc.stdout)
    config = load_experiment_config("configs/thinker_talker.py", "variant=tiny")
    config.model.thinker.num_layers = 6
    assert proc.stdout.strip() == _expected_table(config, capsys).strip()
    # 4 -> 6 layers: two more thinker layers, every other component unchanged.
    assert rows["thinker"][0] > base["thinker"][0]
    for name in ("aut", "talker", "talker_code_predictor", "code2wav"):
        assert rows[name] == base[name], name
    assert rows["TOTAL"][0] - base["TOTAL"][0] == rows["thinker"][0] - base["thinker"][0]


def test_negative_layer_override_is_a_config_error():
    proc = _launch(TINY, "--mode=describe", "--config.model.thinker.num_layers=-1")
    assert proc.returncode != 0
    assert proc.stdout == ""  # no table
    last = proc.stderr.strip().splitlines()[-1]
    assert last == "ConfigError: model.thinker.num_layers=-1: must be >= 1", last
    assert "Traceback" not in proc.stderr
    _assert_nothing_traced(proc.stderr)


def _unknown_field():
    return _launch(TINY, "--mode=describe", "--config.model.thinker.bogus=3")


def test_unknown_field_override_fails_naming_the_field():
    proc = _unknown_field()
    assert proc.returncode != 0 and proc.stdout == ""
    assert "bogus" in proc.stderr.strip().splitlines()[-1]
    _assert_nothing_traced(proc.stderr)


def test_unknown_field_override_names_the_dotted_path():
    proc = _unknown_field()
    assert "model.thinker.bogus" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_variant_errors_clearly():
    proc = _launch("--config=configs/thinker_talker.py:variant=huge", "--mode=describe")
    assert proc.returncode != 0 and proc.stdout == ""
    assert ("config arg variant='huge': expected one of ['design_reference', "
            "'qwen3_omni_30b_a3b', 'tiny', 'tiny_asr', 'tts_tiny', 'tts_speech']") in proc.stderr
    _assert_nothing_traced(proc.stderr)


MOSHI_FILE = "/work/shared/reference-configs/moshi/stt_1b_enfr.json"
if not os.path.exists(MOSHI_FILE):
    MOSHI_FILE = os.path.join(ROOT, "..", "shared", "reference-configs", "moshi",
                              "stt_1b_enfr.json")


@pytest.mark.skipif(not os.path.exists(MOSHI_FILE), reason="official Kyutai configs absent")
def test_official_moshi_config_file_through_the_launcher(capsys):
    """Issue 5: the launcher accepts an official Kyutai config (`configs/moshi.py:file=PATH`)."""
    proc = _launch(f"--config=configs/moshi.py:file={MOSHI_FILE}", "--mode=describe")
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = _expected_table(load_experiment_config("configs/moshi.py", "variant=stt_1b_en_fr"), capsys)
    assert proc.stdout.strip() == want.strip()
    assert _rows(proc.stdout)["TOTAL"][0] > 9 * 10**8
