"""AuT vs transformers' Qwen3OmniMoeAudioEncoder (tiny random model imported through
load_pretrained from a save_pretrained directory; fp32; tolerance 1e-4 max abs)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm.audio import features as features_lib
from audiolm.models import aut as aut_lib

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


def _features(ref, model_config, seconds_list, seed=0):
    """Real-length log-mels of speech-like clips, padded into one batch."""
    sr = model_config.audio.sample_rate
    clips = [ref.speechlike(int(s * sr), seed=seed + i) for i, s in enumerate(seconds_list)]
    n = max(len(c) for c in clips)
    batch = np.zeros((len(clips), n), np.float32)
    for i, c in enumerate(clips):
        batch[i, :len(c)] = c
    feats, lengths = features_lib.log_mel_from_config(batch, model_config.audio,
                                                      lengths=np.array([len(c) for c in clips]))
    return np.asarray(feats), np.asarray(lengths)


def _reference(model, feats, lengths):
    import torch

    tower = model.thinker.model.audio_tower
    x = np.concatenate([feats[i, :lengths[i]] for i in range(len(lengths))], axis=0).T
    with torch.no_grad():
        out = tower(torch.from_numpy(np.ascontiguousarray(x)),
                    feature_lens=torch.from_numpy(lengths.astype(np.int64)))
    return out.last_hidden_state.numpy()


def test_token_counts_match_reference():
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
        _get_feat_extract_output_lengths)
    import torch

    frames = np.array([1, 7, 99, 100, 101, 250, 1030, 3000])
    ref = _get_feat_extract_output_lengths(torch.from_numpy(frames), 50).numpy()
    assert aut_lib.num_audio_tokens(frames, 100).tolist() == ref.tolist()
    assert aut_lib.num_audio_tokens(1030, 100) == int(ref[-2])


def test_aut_matches_reference_on_multi_window_clips(loaded):
    """10.3 s (11 chunks: three 4-chunk attention windows, 30-frame remainder) and 3.33 s in one
    padded batch; each row equals the reference run on that clip alone."""
    ref, model, model_config, params = loaded
    feats, lengths = _features(ref, model_config, [10.3, 3.33])
    assert lengths.tolist() == [1030, 333]
    module = aut_lib.build(model_config)
    emb, mask = jax.jit(module.apply)({"params": params["aut"]}, jnp.asarray(feats),
                                      jnp.asarray(lengths))
    emb, mask = np.asarray(emb), np.asarray(mask)
    n_tokens = aut_lib.num_audio_tokens(lengths, model_config.aut.chunk_frames)
    assert mask.sum(1).tolist() == n_tokens.tolist() == [134, 44]
    for i in range(2):
        want = _reference(model, feats[i:i + 1], lengths[i:i + 1])
        got = emb[i, :n_tokens[i]]
        assert got.shape == want.shape
        err = float(np.abs(got - want).max())
        assert err <= TOL, (i, err)  # measured 7.5e-9 (outputs ~0.05 in size: ~1.5e-7 relative)
        assert np.all(emb[i, n_tokens[i]:] == 0)
    # The batched reference (both clips at once) agrees too.
    both = _reference(model, feats, lengths)
    got = np.concatenate([emb[0, :n_tokens[0]], emb[1, :n_tokens[1]]])
    assert float(np.abs(got - both).max()) <= TOL


def test_aut_matches_reference_on_short_clip(loaded):
    """0.57 s (57 frames, less than one chunk) alone: one partial chunk, one window."""
    ref, model, model_config, params = loaded
    feats, lengths = _features(ref, model_config, [0.57], seed=5)
    emb, mask = jax.jit(aut_lib.build(model_config).apply)(
        {"params": params["aut"]}, jnp.asarray(feats), jnp.asarray(lengths))
    want = _reference(model, feats, lengths)
    n = int(aut_lib.num_audio_tokens(int(lengths[0]), model_config.aut.chunk_frames))
    assert int(np.asarray(mask).sum()) == n == want.shape[0]
    assert float(np.abs(np.asarray(emb)[0, :n] - want).max()) <= TOL


def test_aut_bad_input():
    spec = aut_lib.AuTSpec(hidden_size=8, num_layers=1, num_heads=2, ffn_hidden=8,
                           conv_channels=2, chunk_frames=10, attention_window_frames=20,
                           output_dim=8)
    module = aut_lib.AuT(spec, n_mels=16)
    with pytest.raises(ValueError, match=r"n_mels=16"):
        module.init(jax.random.PRNGKey(0), jnp.zeros((1, 30, 12)))
