"""Battery: cross-field config rules (special token ids vs the data tokenizer, vocab size) and
the launcher's errors for a missing config file, each naming the fields and values."""

import os
import subprocess
import sys

import pytest

from audiolm import config as config_lib
from audiolm.config import ConfigError
from audiolm.presets.experiment import load_experiment_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cfg(data="speech_synth", tokenizer="bytes"):
    config = load_experiment_config("configs/thinker_talker.py", f"variant=tiny,data={data}")
    config.data.tokenizer = tokenizer
    return config


def _error(config):
    with pytest.raises(ConfigError) as info:
        config_lib.validate(config)
    return str(info.value)


@pytest.mark.parametrize("field,value,meaning", [
    ("audio_token_id", 100, "the id of 'a'"),
    ("audio_token_id", 35, "the id of ' '"),
    ("audio_token_id", 258, "the id of"),
    ("audio_start_token_id", 1, "its bos id"),
    ("audio_end_token_id", 0, "its pad id"),
    ("audio_end_token_id", 2, "its eos id"),
])
def test_special_id_colliding_with_a_byte_names_both(field, value, meaning):
    message = _error_with(field, value)
    assert message.startswith(f"model.thinker.{field}={value}: collides with "
                              "data.tokenizer='bytes' (ids 0..258)")
    assert meaning in message and "must be >= 259" in message


def _error_with(field, value, **kw):
    config = _cfg(**kw)
    config.model.thinker[field] = value
    return _error(config)


def test_special_id_colliding_with_a_chars_id():
    message = _error_with("audio_token_id", 10, tokenizer="chars")
    assert "data.tokenizer='chars' (ids 0..46)" in message and "'f'" in message


@pytest.mark.parametrize("vocab", [1, 100, 258])
def test_vocab_below_the_tokenizer_names_both_fields(vocab):
    message = _error_with("vocab_size", vocab)
    assert message.startswith(f"model.thinker.vocab_size={vocab}: must be >= 259")
    assert "data.tokenizer='bytes'" in message


@pytest.mark.parametrize("field,value", [("eos_token_id", 100), ("pad_token_id", 120)])
def test_eos_or_pad_on_a_text_token(field, value):
    message = _error_with(field, value)
    assert message.startswith(f"model.thinker.{field}={value}: must be")
    assert "or >= 259" in message


def test_valid_pairs_still_validate():
    config_lib.validate(_cfg())
    config_lib.validate(_cfg(tokenizer="chars"))
    synthetic = _cfg(data="synthetic")
    synthetic.model.thinker.audio_token_id = 100  # no tokenizer: the model's own ids
    config_lib.validate(synthetic)


def _main(*args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "audiolm.main", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_missing_config_file_names_the_path():
    proc = _main("--config=configs/nope.py:variant=tiny", "--mode=describe")
    assert proc.returncode != 0
    assert "no such config file 'configs/nope.py'" in proc.stderr
    assert "config_config" not in proc.stderr and "Traceback" not in proc.stderr


def test_cli_colliding_special_id_is_a_one_line_config_error():
    proc = _main("--config=configs/thinker_talker.py:variant=tiny", "--mode=describe",
                 "--config.model.thinker.audio_token_id=100")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "model.thinker.audio_token_id=100: collides with data.tokenizer='bytes'" in proc.stderr
