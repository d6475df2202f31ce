"""Moshi generation (audiolm.sample.moshi) vs kyutai's `LMGen` (moshi 0.2.13, fp32, one thread).

Greedy decoding is compared token for token; sampled decoding against itself (fixed seed) and
between the streaming step loop and the scanned loop. Teacher-forced logits of what was
generated equal the decode logits to 1e-4 (fp32) in every fusion mode.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm.importers import moshi as ck
from audiolm.models import moshi as M
from audiolm.nn.compile import fast_jit
from audiolm.sample import moshi as S
from audiolm.presets import moshi as cm
from audiolm.presets.experiment import load_experiment_config

ref_lib = pytest.importorskip("tests.reference_moshi")
torch = ref_lib.torch
N = 36  # decode steps (>= 32 compared)
TOL = 1e-4


def _tiny():
    m = cm.tiny()  # delays (0, 0, 1, 2, 1): text, 3 generated codebooks, 1 user codebook
    m.temporal.context = 7  # 36 steps wrap the ring KV cache five times
    return m


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    m = _tiny()
    ref = ref_lib.reference_model(m, seed=3)
    folder = ref_lib.save_checkpoint(ref, m, str(tmp_path_factory.mktemp("moshi") / "ckpt"))
    config, params = ck.load_pretrained(folder)
    return ref, config, params


def _lmgen(ref, user):
    from moshi.models.lm import LMGen

    texts, audios, frames = [], [], []
    gen = LMGen(ref, use_sampling=False, on_text_hook=lambda t: texts.append(t.clone()),
                on_audio_hook=lambda a: audios.append(a.clone()))
    with gen.streaming(user.shape[0]):
        for o in range(user.shape[2]):
            out = gen.step(torch.from_numpy(user[:, :, o:o + 1]).long())
            if out is not None:
                frames.append(out[:, :, 0].numpy())
    tokens = np.concatenate([torch.stack(texts, 1).numpy()[:, None],
                             torch.stack(audios, 2).numpy()], axis=1)
    return tokens, np.stack(frames, 2)


def test_greedy_generation_matches_lmgen(imported):
    ref, config, params = imported
    module = M.build(config)
    spec = module.spec
    B = 2
    user = np.random.default_rng(1).integers(0, spec.card, (B, 1, N)).astype(np.int32)
    ref_tokens, ref_frames = _lmgen(ref, user)
    sampler = S.Sampler(module, fast_compile=True)  # greedy
    out = sampler.generate(params, user, jax.random.PRNGKey(0))
    tokens, codes = np.asarray(out["tokens"]), np.asarray(out["codes"])
    assert tokens.shape == (B, 4, N) and ref_tokens.shape == (B, 4, N)
    np.testing.assert_array_equal(tokens, ref_tokens)  # every step, text + 3 codebooks
    # Undelayed through patterns.revert == LMGen's frames (its output starts after max_delay).
    max_delay = max(spec.delays)
    assert ref_frames.shape == (B, 4, N - max_delay)
    np.testing.assert_array_equal(codes[:, :, :N - max_delay], ref_frames)
    assert len(np.unique(tokens[:, 1:])) > 4 and len(np.unique(tokens[:, 0])) > 2

    # The streaming step API gives the same tokens and emits LMGen's frames at the same steps.
    state = sampler.init_stream(B)
    key = jax.random.PRNGKey(0)
    step_tokens, step_frames = [], []
    for o in range(N):
        state, o_out = sampler.step(params, state, user[:, :, o], key)
        step_tokens.append(np.asarray(o_out["tokens"]))
        assert bool(o_out["frame_valid"]) == (o >= max_delay)
        if o >= max_delay:
            step_frames.append(np.asarray(o_out["frame"]))
    np.testing.assert_array_equal(np.stack(step_tokens, 2), ref_tokens)
    np.testing.assert_array_equal(np.stack(step_frames, 2), ref_frames)

    # User audio conditions the output.
    other = sampler.generate(params, (user + 5) % spec.card, jax.random.PRNGKey(0))
    assert (np.asarray(other["tokens"]) != tokens).any()


def test_sampling_fixed_seed_and_streaming_equals_scan(imported):
    rules = pytest.importorskip("audiolm.sample.rules")
    del rules
    _, config, params = imported
    module = M.build(config)
    B = 3
    user = np.random.default_rng(2).integers(0, 16, (B, 1, 12)).astype(np.int32)
    options = S.Options(temperature=1.0, top_k=6, text_temperature=0.9, text_top_k=5)
    sampler = S.Sampler(module, options, fast_compile=True)
    key = jax.random.PRNGKey(7)
    a = sampler.generate(params, user, key)
    b = sampler.generate(params, user, key)
    np.testing.assert_array_equal(np.asarray(a["tokens"]), np.asarray(b["tokens"]))
    c = sampler.generate(params, user, jax.random.PRNGKey(8))
    assert (np.asarray(a["tokens"]) != np.asarray(c["tokens"])).any()
    # The streaming loop with the scan's per-step keys reproduces the scan.
    keys = jax.random.split(key, user.shape[2])
    state = sampler.init_stream(B)
    toks = []
    for o in range(user.shape[2]):
        state, out = sampler.step(params, state, user[:, :, o], keys[o])
        toks.append(np.asarray(out["tokens"]))
    np.testing.assert_array_equal(np.stack(toks, 2), np.asarray(a["tokens"]))


def _random_params(module, seed):
    """Random params from the init shapes (cheaper than compiling the initialiser)."""
    tokens = jnp.zeros((1, 1 + module.spec.audio_codebooks, 4), jnp.int32)
    shapes = jax.eval_shape(lambda r: module.init(r, tokens, method=M.MoshiLM.init_all),
                            jax.random.PRNGKey(0))["params"]
    rng = np.random.default_rng(seed)

    def draw(path, x):
        name = jax.tree_util.keystr(path)
        if "norm" in name or "scale" in name:
            return (1.0 + 0.1 * rng.standard_normal(x.shape)).astype(np.float32)
        return (rng.standard_normal(x.shape) / np.sqrt(x.shape[0])).astype(np.float32)
    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.mark.parametrize("fusion", ["add", "interleave", "concat", "cross_attention"])
def test_decode_equals_teacher_forced_forward(fusion):
    """The ring-cache decode logits equal the full forward on the columns it read (window
    wraps included), and greedy tokens are the argmax of both."""
    m = cm.tiny(fusion)
    m.temporal.context = 6
    module = M.build(m)
    params = _random_params(module, seed=1)
    B, n = 2, 10
    user = np.random.default_rng(3).integers(0, 16, (B, 1, n)).astype(np.int32)
    out = S.Sampler(module, fast_compile=True).generate(params, user, jax.random.PRNGKey(0))
    columns, tokens = out["columns"], out["tokens"]

    @fast_jit
    def forward(p, columns, tokens):
        full = module.apply({"params": p}, columns)
        targets = jnp.concatenate([tokens, columns[:, tokens.shape[1]:]], axis=1)
        audio = module.apply({"params": p}, targets, full["hidden"],
                             method=M.MoshiLM.depformer_forward)
        return full["text_logits"], audio

    text_logits, audio_logits = forward(params, columns, tokens)
    err = float(jnp.max(jnp.abs(text_logits - out["text_logits"])))
    print(f"moshi decode vs forward ({fusion}): text logits {err:.2e}")
    assert err <= TOL
    np.testing.assert_array_equal(np.argmax(np.asarray(text_logits), -1), tokens[:, 0])
    np.testing.assert_array_equal(np.argmax(np.asarray(audio_logits), -1), tokens[:, 1:])


def test_write_samples(imported, tmp_path):
    _, config, params = imported
    full = load_experiment_config("configs/moshi.py")
    full.model = config
    full.sample.temperature = 0.0
    full.sample.extra.text_temperature = 0.0
    full.sample.num_samples = 2
    full.sample.max_new_tokens = 9
    module = M.build(config)
    summary = S.write_samples(module, params, full, str(tmp_path))
    data = np.load(tmp_path / "samples" / "tokens.npz")
    assert data["tokens"].shape == (2, 4, 9) and data["codes"].shape == (2, 4, 7)
    assert (data["user"] == -1).all()  # no user codes given: the user codebook is absent
    lines = (tmp_path / "samples" / "text.txt").read_text().splitlines()
    assert len(lines) == 2 and summary["frames"] == 7
    full.sample.max_new_tokens = 2
    with pytest.raises(ValueError, match="sample.max_new_tokens=2"):
        S.write_samples(module, params, full, str(tmp_path))
    with pytest.raises(ValueError, match=r"user codes shape \(2, 2, 5\) must be"):
        S.Sampler(module).generate(params, np.zeros((2, 2, 5), np.int32),
                                   jax.random.PRNGKey(0))


def test_runner_samples_from_an_imported_kyutai_dir(tmp_path):
    """--mode=sample path: a Kyutai checkpoint dir as config file + init_from, Kyutai sampling
    (temperature 0.8 / top-k 250 audio, 0.7 / 25 text from configs/moshi.py)."""
    from audiolm.train import sampling as runner

    m = cm.tiny()
    folder = ref_lib.save_checkpoint(ref_lib.reference_model(m, seed=4), m,
                                     str(tmp_path / "ckpt"))
    config = load_experiment_config("configs/moshi.py", f"file={folder}/config.json")
    config.init_from = folder
    config.sample.update(max_new_tokens=8, num_samples=2)
    summary = runner.run(config, str(tmp_path / "work"))
    assert summary["family"] == "moshi" and summary["frames"] == 6
    assert summary["options"]["top_k"] == 250 and summary["options"]["text_top_k"] == 25
    data = np.load(tmp_path / "work" / "samples" / "tokens.npz")
    assert data["tokens"].shape == (2, 4, 8) and (data["tokens"][:, 1:] < 16).all()
    assert (tmp_path / "work" / "samples" / "summary.json").exists()
