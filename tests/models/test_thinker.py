"""Thinker (with AuT embeddings merged at audio-token positions) vs transformers'
Qwen3OmniMoeThinkerForConditionalGeneration on a tiny random model imported through
load_pretrained (fp32; logits and router logits within 1e-4; identical top-k routing)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm.audio import features as features_lib
from audiolm.models import aut as aut_lib
from audiolm.models import thinker as thinker_lib
from audiolm.models import thinker_talker as family
from audiolm.tasks import asr as asr_task

TOL = 1e-4


@pytest.fixture(scope="module")
def loaded():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from audiolm.importers import qwen3_omni
    from tests import reference_qwen as ref

    model, path = ref.tiny_checkpoint()
    model_config, params = qwen3_omni.load_pretrained(path)
    return ref, model, model_config, params


def _batch(ref, model_config, seconds=(2.5, 1.37), length=48, seed=0):
    """Two rows [text, audio_start, audio x n, audio_end, text] of equal length, no padding."""
    sr, th = model_config.audio.sample_rate, model_config.thinker
    clips = [ref.speechlike(int(s * sr), seed=seed + i) for i, s in enumerate(seconds)]
    n = max(len(c) for c in clips)
    audio = np.zeros((len(clips), n), np.float32)
    for i, c in enumerate(clips):
        audio[i, :len(c)] = c
    feats, frames = features_lib.log_mel_from_config(audio, model_config.audio,
                                                     lengths=np.array([len(c) for c in clips]))
    feats, frames = np.asarray(feats), np.asarray(frames)
    rng = np.random.default_rng(seed)
    tokens = np.zeros((len(clips), length), np.int64)
    for i in range(len(clips)):
        k = int(aut_lib.num_audio_tokens(int(frames[i]), model_config.aut.chunk_frames))
        text = rng.integers(0, 140, size=length - k - 5)
        row = ([1, 2, 3, th.audio_start_token_id] + [th.audio_token_id] * k
               + [th.audio_end_token_id] + text.tolist())
        tokens[i] = row
    return tokens, feats, frames


def _reference(model, tokens, feats, frames, positions=True):
    import torch

    feat_mask = (np.arange(feats.shape[1])[None] < frames[:, None]).astype(np.int64)
    kw = {}
    if positions:
        kw["position_ids"] = torch.arange(tokens.shape[1])[None].expand(tokens.shape[0], -1)
    with torch.no_grad():
        out = model.thinker(input_ids=torch.from_numpy(tokens),
                            input_features=torch.from_numpy(np.ascontiguousarray(
                                feats.transpose(0, 2, 1))),
                            feature_attention_mask=torch.from_numpy(feat_mask),
                            attention_mask=torch.ones(tokens.shape, dtype=torch.long),
                            output_router_logits=True, use_cache=False, **kw)
    return out.logits.numpy(), [r.numpy() for r in out.router_logits]


def _ours(model_config, params, tokens, feats, frames):
    module = family.build(model_config)

    @jax.jit
    def run(p, t, f, n):
        return module.apply({"params": p}, t, f, n,
                            capture_intermediates=lambda m, _: m.name == "router",
                            mutable=["intermediates"])

    out, state = run(params, jnp.asarray(tokens, jnp.int32), jnp.asarray(feats),
                     jnp.asarray(frames))
    inter = state["intermediates"]["thinker"]
    routers = {int(k.split("_")[1]): np.asarray(v["ffn"]["router"]["__call__"][0])
               for k, v in inter.items() if k.startswith("layers_")}
    return np.asarray(out["logits"]), routers


def test_thinker_logits_and_routing_match_reference(loaded):
    ref, model, model_config, params = loaded
    tokens, feats, frames = _batch(ref, model_config)
    want_logits, want_routers = _reference(model, tokens, feats, frames)
    got_logits, got_routers = _ours(model_config, params, tokens, feats, frames)
    err = float(np.abs(got_logits - want_logits).max())
    assert err <= TOL, err  # measured 2.7e-7 (logits up to ~0.5)
    th = model_config.thinker
    moe_layers = [i for i in range(th.num_layers) if thinker_lib.is_moe_layer(
        i, th.num_experts, th.decoder_sparse_step, th.mlp_only_layers)]
    assert moe_layers == [0, 2, 3] and sorted(got_routers) == moe_layers
    assert len(want_routers) == len(moe_layers)
    for layer, want in zip(moe_layers, want_routers):
        got = got_routers[layer].reshape(want.shape)
        assert float(np.abs(got - want).max()) <= TOL  # measured 1.2e-7 .. 1.5e-7
        k = th.num_experts_per_tok
        got_top = np.sort(np.argsort(-got, axis=-1)[:, :k], axis=-1)
        want_top = np.sort(np.argsort(-want, axis=-1)[:, :k], axis=-1)
        np.testing.assert_array_equal(got_top, want_top)


def test_reference_audio_positions_are_plain_1d(loaded):
    """For audio + text, the reference's own M-RoPE positions give the same logits as arange:
    our 1-D RoPE is the reference's rule for this input."""
    ref, model, model_config, params = loaded
    tokens, feats, frames = _batch(ref, model_config)
    own, _ = _reference(model, tokens, feats, frames, positions=False)
    arange, _ = _reference(model, tokens, feats, frames, positions=True)
    assert float(np.abs(own - arange).max()) <= TOL


def test_bad_inputs_raise_before_compute(loaded):
    ref, _, model_config, params = loaded
    tokens, feats, frames = _batch(ref, model_config)
    module = family.build(model_config)
    bad = tokens.copy()
    bad[0, 0] = model_config.thinker.vocab_size
    with pytest.raises(ValueError, match=r"token ids must be in \[0, vocab_size=160\)"):
        module.apply({"params": params}, jnp.asarray(bad, jnp.int32), feats, frames)
    fewer = tokens.copy()
    fewer[0, 4] = 7  # one audio placeholder less than the clip's AuT tokens
    with pytest.raises(ValueError, match=r"audio_token_id=150 placeholders"):
        module.apply({"params": params}, jnp.asarray(fewer, jnp.int32), feats, frames)
    with pytest.raises(ValueError, match=r"n_mels=128"):
        module.apply({"params": params}, jnp.asarray(tokens, jnp.int32), feats[..., :80], frames)


def test_is_moe_layer_follows_reference_rule():
    """decoder_sparse_step / mlp_only_layers select the same layers as transformers."""
    pytest.importorskip("transformers")
    from tests import reference_qwen as ref

    cfg = ref.hf_config(ref.tiny_config_dict(thinker_config={"text_config": {
        "num_hidden_layers": 6, "decoder_sparse_step": 2, "mlp_only_layers": [3]}}))
    model = ref.meta_model(cfg)
    want = [i for i, layer in enumerate(model.thinker.model.language_model.layers)
            if hasattr(layer.mlp, "gate")]
    got = [i for i in range(6) if thinker_lib.is_moe_layer(i, 8, 2, (3,))]
    assert got == want == [1, 5]


def test_asr_sequence_layout():
    from audiolm.presets.experiment import load_experiment_config

    model = load_experiment_config("configs/thinker_talker.py", "variant=tiny").model
    th = model.thinker
    hop, chunk = model.audio.hop_length, model.aut.chunk_frames
    lengths = np.array([250 * hop, 0])  # 250 frames -> 33 AuT tokens; an empty padding row
    text = np.array([[1, 10, 11, 2, 0], [0, 0, 0, 0, 0]], np.int32)
    mask = text != 0
    mask[0, 0] = True
    tokens, target = family.asr_sequence(model, lengths, text, mask, num_samples=300 * hop)
    tokens, target = np.asarray(tokens), np.asarray(target)
    n = int(aut_lib.num_audio_tokens(250, chunk))
    n_max = int(aut_lib.num_audio_tokens(300, chunk))
    assert tokens.shape == (2, n_max + 2 + 5)
    row = [th.audio_start_token_id] + [th.audio_token_id] * n + [th.audio_end_token_id,
                                                                 1, 10, 11, 2]
    assert tokens[0, :len(row)].tolist() == row
    assert set(tokens[0, len(row):].tolist()) == {th.pad_token_id}
    assert np.flatnonzero(target[0]).tolist() == [n + 3, n + 4, n + 5]  # 10, 11, eos
    assert tokens[1, :2].tolist() == [th.audio_start_token_id, th.audio_end_token_id]
    assert target[1].sum() == 0


def test_text_input_noise_draws_from_the_row_transcript():
    tokens = jnp.asarray([[7, 8, 1, 10, 11, 12, 2, 0], [7, 8, 1, 20, 2, 0, 0, 0]], jnp.int32)
    target = (jnp.arange(8)[None] >= 3) & (tokens != 0)  # ids after bos, eos included
    target = target.astype(jnp.float32)
    key = jax.random.PRNGKey(3)
    assert (asr_task.corrupt_text_inputs(tokens, target, 0.0, key) == tokens).all()
    out = np.asarray(asr_task.corrupt_text_inputs(tokens, target, 1.0, key))
    np.testing.assert_array_equal(out[:, :3], tokens[:, :3])  # audio markers and bos kept
    np.testing.assert_array_equal(out[0, 7:], [0])
    np.testing.assert_array_equal(out[1, 5:], [0, 0, 0])
    assert set(out[0, 3:7]) <= {10, 11, 12, 2} and set(out[1, 3:5]) <= {20, 2}
    many = np.stack([np.asarray(asr_task.corrupt_text_inputs(tokens, target, 0.5,
                                                           jax.random.PRNGKey(i)))
                     for i in range(200)])
    changed = (many[:, 0, 3:7] != np.asarray(tokens[0, 3:7])).mean()
    assert 0.3 < changed < 0.45  # 0.5 flips, 1/4 of them draw the same token back: 0.375


def test_loss_fn_on_example_batch(loaded):
    """The family loss (log-mel + AuT + Thinker + CE + MoE aux) on the data pipeline's batch
    layout is jit-able and starts near log(vocab). (That it trains through the shared loop is
    tests/train/test_families.py.)"""
    from audiolm.presets.experiment import load_experiment_config

    ref, _, model_config, params = loaded
    # synthetic: the batch is the family's example_batch (this vocab is below the bytes ids)
    config = load_experiment_config("configs/thinker_talker.py", "variant=tiny,data=synthetic")
    config.model = model_config.copy_and_resolve_references()
    config.model.enable_audio_output = False
    config.model.aut.max_frames = 150
    config.model.thinker.max_seq_len = 40
    from audiolm import config as config_lib

    config_lib.validate(config)
    batch = family.example_batch(config.model, 2, np.random.default_rng(0))
    n_audio = int(aut_lib.num_audio_tokens(150, config.model.aut.chunk_frames))
    assert batch["audio"].shape == (2, 150 * 160) and batch["text"].shape[1] == 40 - n_audio - 2
    module = family.build(config.model)
    params = {"aut": params["aut"], "thinker": params["thinker"]}
    key = jax.random.PRNGKey(1)
    loss, metrics = jax.jit(lambda p: asr_task.loss_fn(module, p, batch, key, config, True))(
        params)
    assert abs(float(loss) - np.log(config.model.thinker.vocab_size)) < 1.0, float(loss)
    assert float(metrics["load_balance_loss"]) > 0
    assert float(metrics["text_targets"]) == float(batch["text_mask"][:, 1:].sum())
    # Input noise acts in training only and leaves the targets (their count) alone.
    noisy = config.copy_and_resolve_references()
    noisy.train.loss.text_input_noise = 0.5
    rng = jax.random.PRNGKey(0)
    run = jax.jit(lambda p, train: asr_task.loss_fn(module, p, batch, rng, noisy, train),
                  static_argnums=1)
    (l_train, m_train), (l_eval, _) = run(params, True), run(params, False)
    assert float(l_eval) == pytest.approx(float(loss), abs=1e-5)
    assert abs(float(l_train) - float(loss)) > 1e-4
    assert float(m_train["text_targets"]) == float(metrics["text_targets"])


def test_cached_decoding_equals_full_forward(loaded):
    """Prefill (audio merged) then token-by-token steps with KV caches reproduce the full
    forward's logits (fp32, 1e-5)."""
    ref, _, model_config, params = loaded
    tokens, feats, frames = _batch(ref, model_config)
    module = family.build(model_config)
    full = jax.jit(lambda p, t, f, n: module.apply({"params": p}, t, f, n)["logits"])(
        params, jnp.asarray(tokens, jnp.int32), jnp.asarray(feats), jnp.asarray(frames))
    split = tokens.shape[1] - 3
    caches = module.thinker.init_caches(tokens.shape[0], tokens.shape[1])
    out = jax.jit(lambda p, t, f, n, c: module.apply({"params": p}, t, f, n, caches=c))(
        params, jnp.asarray(tokens[:, :split], jnp.int32), jnp.asarray(feats),
        jnp.asarray(frames), caches)
    got = [out["logits"]]
    step = jax.jit(lambda p, t, c: module.apply({"params": p}, t, caches=c))
    caches = out["caches"]
    for i in range(split, tokens.shape[1]):
        out = step(params, jnp.asarray(tokens[:, i:i + 1], jnp.int32), caches)
        caches = out["caches"]
        got.append(out["logits"])
    got = np.concatenate([np.asarray(g) for g in got], axis=1)
    assert float(np.abs(got - np.asarray(full)).max()) <= 1e-5
