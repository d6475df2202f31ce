"""Pattern-LM tts (`audiolm.tasks.tts_pattern`): the END-padded pattern batches, the loop
learning real codec codes of the espeak set, an exact resume after SIGKILL, generation cut at
END, and the config rules."""

import jax
import numpy as np
import pytest

from audiolm import config as config_lib
from audiolm import data as data_lib
from audiolm.config import ConfigError
from audiolm.models import pattern_lm as lm
from audiolm.presets.experiment import load_experiment_config
from audiolm.tasks import tts_pattern
from audiolm.train import loop, metrics as metrics_lib
from tests.config_helpers import assert_rule
from tests.resume_helpers import losses as _losses, restored_params as _params, run_killed


def _config(tmp=None):
    config = load_experiment_config("configs/pattern_lm.py", "tts_tiny")
    if tmp is not None:
        config.data.cache_dir = str(tmp)
    return config


def _speech_batch(tokenizer):
    """A speech-codes batch by hand: 3 utterances of 5, 3 and 0 frames (a padding row)."""
    codes = np.arange(2 * 6).reshape(1, 2, 6).repeat(3, axis=0).astype(np.int32) % 32
    mask = np.arange(6)[None, :] < np.array([5, 3, 0])[:, None]
    texts = ["the cat", "a dog ran", ""]
    text = np.zeros((3, 64), np.int32)
    text_mask = np.zeros((3, 64), bool)
    for i, t in enumerate(texts[:2]):
        ids = tokenizer.encode_with_specials(t)
        text[i, :len(ids)], text_mask[i, :len(ids)] = ids, True
    return {"codes": np.where(mask[:, None], codes, 0), "codes_mask": mask, "text": text,
            "text_mask": text_mask, "speaker": np.array([0, 3, -1], np.int32)}


def test_pattern_batch_pads_with_end_and_learns_one_end_frame():
    config = _config()
    tokenizer = data_lib.make_tokenizer(config.data)
    out = tts_pattern.pattern_batch(_speech_batch(tokenizer), config, tokenizer)
    end = tts_pattern.end_code(config)
    assert end == 32  # the tiny codec's codebook_size: END is one past its codes
    assert out["codes"].shape == (3, 2, 7) and out["codes"].dtype == np.int32
    np.testing.assert_array_equal(out["codes"][0, :, :5], np.arange(12).reshape(2, 6)[:, :5])
    assert (out["codes"][0, :, 5:] == end).all() and (out["codes"][1, :, 3:] == end).all()
    assert (out["codes"][2] == end).all()
    # real frames + the first END frame; nothing of a padding row
    np.testing.assert_array_equal(out["target_mask"].sum(axis=1), [6, 4, 0])
    assert out["target_mask"][1, 3] and not out["target_mask"][1, 4]
    text, mask = out["cond.text"], out["cond.text.mask"]
    assert text.shape == (3, 62)
    assert bytes((text[1][mask[1]] - 1).astype(np.uint8).tolist()) == b"a dog ran"
    assert not mask[2].any()
    np.testing.assert_array_equal(out["cond.speaker"], [1, 4, 0])  # row 0 = unknown speaker


def test_another_pattern_learns_and_speaks():
    """The pattern is selectable: 'unroll' (codebooks flattened in time) trains on the same
    batches and generates codes of the same kind."""
    config = _config()
    config.model.pattern.kind = "unroll"
    config_lib.validate(config)
    tokenizer = data_lib.make_tokenizer(config.data)
    batch = tts_pattern.pattern_batch(_speech_batch(tokenizer), config, tokenizer)
    module = lm.build(config.model)
    params = lm.init_params(config.model, jax.random.PRNGKey(0))
    loss, metrics = jax.jit(lambda p: tts_pattern.loss_fn(module, p, batch, jax.random.PRNGKey(1),
                                                          config, True))(params)
    assert np.isfinite(float(loss)) and float(metrics["frames"]) == 10.0
    (codes,) = tts_pattern.generate_codes(module, params, config, ["a dog ran"], [2],
                                          jax.random.PRNGKey(0))
    assert codes.shape[0] == 2 and codes.shape[1] <= int(config.sample.max_new_tokens)
    assert ((codes >= 0) & (codes < 32)).all()


def test_cut_at_end():
    codes = np.array([[3, 4, 5, 32, 32], [1, 2, 32, 32, 32]])
    np.testing.assert_array_equal(tts_pattern.cut_at_end(codes, 32), [[3, 4], [1, 2]])
    assert tts_pattern.cut_at_end(codes[:, :2], 32).shape == (2, 2)  # no END: every frame
    assert tts_pattern.cut_at_end(np.full((2, 3), 32), 32).shape == (2, 0)


def tiny_config(cache_dir):
    """tts_tiny for a 6-step loop run: checkpoints every 2 steps, one evaluation at the end."""
    config = _config(cache_dir)
    config.train.update(steps=6, checkpoint_every=2, eval_every=6, log_every=1,
                        compilation_cache_dir="")
    return config


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted 6-step run of the loop on the random tiny codec's codes of the espeak
    set (one espeak set + code cache shared with test_tts.py)."""
    pytest.importorskip("espeakng_loader")
    cache = tmp_path_factory.getbasetemp() / "tts_tiny_cache"
    cache.mkdir(exist_ok=True)
    workdir = str(tmp_path_factory.mktemp("tts_pattern_reference"))
    config = tiny_config(str(cache))
    loop.run(config, workdir)
    return config, workdir


def test_loop_learns_the_codes_with_cfg_dropout(reference_run):
    config, workdir = reference_run
    assert config.model.conditioning.cfg_dropout > 0
    losses = [loss for _, loss in _losses(workdir)]
    assert len(losses) == 6 and np.isfinite(losses).all()
    assert losses[-1] < 0.8 * losses[0], losses
    (evaluation,) = metrics_lib.read_metrics(workdir, "eval")
    assert evaluation["step"] == 6 and evaluation["frames"] > 0
    assert {"ce_q0", "ce_q1", "accuracy"} <= set(evaluation)


def test_resume_after_sigkill_is_exact(reference_run, tmp_path):
    """A subprocess SIGKILLs itself in step 5; the resumed run matches the reference exactly."""
    config, ref_dir = reference_run
    workdir = str(tmp_path)
    run_killed(workdir, __file__, "tiny_config", config.data.cache_dir, step=5)
    loop.run(config, workdir)
    assert _losses(workdir) == _losses(ref_dir)
    assert _losses(workdir, "eval") == _losses(ref_dir, "eval")
    jax.tree_util.tree_map(np.testing.assert_array_equal, _params(config, workdir),
                           _params(config, ref_dir))


def test_generate_codes_shapes_and_range(reference_run):
    config, workdir = reference_run
    module = lm.build(config.model)
    params = _params(config, workdir)
    texts = ["the cat sat", "a dog ran home", "hi"]
    codes = tts_pattern.generate_codes(module, params, config, texts, [0, 3, -1],
                                       jax.random.PRNGKey(0))
    frames = int(config.sample.max_new_tokens)
    assert len(codes) == 3
    for c in codes:
        assert c.dtype == np.int32 and c.shape[0] == 2 and c.shape[1] <= frames
        assert ((c >= 0) & (c < 32)).all()  # END cut away: codec codes only
    again = tts_pattern.generate_codes(module, params, config, texts, [0, 3, -1],
                                       jax.random.PRNGKey(0))
    for a, b in zip(codes, again):
        np.testing.assert_array_equal(a, b)  # same key, same speech
    with pytest.raises(ValueError, match="3 texts but 2 speakers"):
        tts_pattern.generate_codes(module, params, config, texts, [0, 1], jax.random.PRNGKey(0))


@pytest.mark.parametrize("path, value, message", [
    ("model.conditioning.global_ids", (), r"model.conditioning.global_ids=\(\): must list "
                                          r"'speaker'"),
    ("model.conditioning.cross_attention_ids", ("speaker",),
     r"cross_attention_ids=\('speaker',\): must list 'text'"),
    ("model.pretransform.codebook_size", 32, r"model.pretransform.codebook_size=32: must be the "
                                             r"codec's codebook_size \+ 1 = 33"),
    ("model.pretransform.n_q", 1, r"model.pretransform.n_q=1: must equal "
                                  r"task.codec.num_codebooks=2"),
    ("model.conditioning.conditioners.text.max_length", 20,
     r"conditioners.text.max_length=20: must be >= data.max_text_len - 2 = 62"),
    ("model.conditioning.conditioners.speaker.num_classes", 4,
     r"speaker.num_classes=4: must be >= data.num_speakers \+ 1 = 5"),
    ("model.pattern.kwargs", {"empty_initial": -1}, r"model.pattern.kind='delay'.*leading "
                                                    r"special step"),
])
def test_rules_name_the_field(path, value, message):
    assert_rule(_config(), {path: value}, message)


def test_rules_need_exactly_text_and_speaker():
    config = _config()
    conds = config.model.conditioning.conditioners
    conds["accent"] = conds.speaker.copy_and_resolve_references()
    with pytest.raises(ConfigError, match=r"conditioners=\['accent', 'speaker', 'text'\]: the "
                                          r"tts batches feed exactly \['speaker', 'text'\]"):
        config_lib.validate(config)
