"""Thinker-Talker generation (audiolm.sample.thinker_talker) vs transformers' Qwen3-Omni Thinker
`generate` (greedy, fp32, one thread) on the tiny random model imported via load_pretrained;
streaming Code2Wav vs one full decode (<= 1e-5); per-row EOS stopping; Talker streaming."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm.audio import features as features_lib
from audiolm.config import ConfigError
from audiolm.models import aut as aut_lib
from audiolm.models import code2wav as c2w_lib
from audiolm.models import thinker_talker as family
from audiolm.sample import thinker_talker as S

N_NEW = 34  # new tokens compared (>= 32)
WAV_TOL = 1e-5


@pytest.fixture(scope="module")
def loaded():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from audiolm.importers import qwen3_omni
    from tests import reference_qwen as ref

    model, path = ref.tiny_checkpoint()
    model_config, params = qwen3_omni.load_pretrained(path)
    return ref, model, model_config, params, family.build(model_config)


_SAMPLERS: dict = {}


def _text_sampler(module, **options):
    """One compiled TextSampler per (module, options) for the whole file."""
    key = (module, tuple(sorted(options.items())))
    if key not in _SAMPLERS:
        _SAMPLERS[key] = S.TextSampler(module, S.TextOptions(**options), fast_compile=True)
    return _SAMPLERS[key]


def _hf_generate(model, row, n, feats=None, frames=None):
    import torch

    kw = {}
    if feats is not None:
        kw = dict(input_features=torch.from_numpy(np.ascontiguousarray(feats.T[None])),
                  feature_attention_mask=torch.ones((1, feats.shape[0]), dtype=torch.long))
    with torch.no_grad():
        out = model.thinker.generate(input_ids=torch.from_numpy(row[None].astype(np.int64)),
                                     attention_mask=torch.ones((1, len(row)), dtype=torch.long),
                                     max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                     eos_token_id=None, pad_token_id=0, **kw)
    return out[0, len(row):].numpy()


def _text_prompts(rng, th):
    lengths = (9, 5, 12)  # different lengths: rows 0 and 1 are left-padded
    return [rng.integers(0, 140, size=k).astype(np.int32) for k in lengths]


def test_greedy_text_matches_transformers_generate(loaded):
    _, model, mc, params, module = loaded
    th = mc.thinker
    prompts = _text_prompts(np.random.default_rng(0), th)
    tokens, mask = S.left_pad(prompts, th.pad_token_id)
    sampler = _text_sampler(module, max_new_tokens=N_NEW, pad_id=th.pad_token_id)
    out = sampler.generate(params, tokens, mask, jax.random.PRNGKey(0))
    got = np.asarray(out["tokens"])
    assert int(out["steps"]) == N_NEW and (np.asarray(out["lengths"]) == N_NEW).all()
    for i, row in enumerate(prompts):
        want = _hf_generate(model, row, N_NEW)
        np.testing.assert_array_equal(got[i], want, err_msg=f"row {i}")
    assert len(np.unique(got)) > 5  # not a constant stream


def test_greedy_audio_prompt_matches_transformers_generate(loaded):
    ref, model, mc, params, module = loaded
    th = mc.thinker
    sr = mc.audio.sample_rate
    clip = ref.speechlike(int(1.3 * sr), seed=3)
    feats, frames = features_lib.log_mel_from_config(clip[None], mc.audio,
                                                     lengths=np.array([len(clip)]))
    feats, frames = np.asarray(feats), np.asarray(frames)
    k = int(aut_lib.num_audio_tokens(int(frames[0]), mc.aut.chunk_frames))
    row = np.array([1, 2, th.audio_start_token_id] + [th.audio_token_id] * k
                   + [th.audio_end_token_id, 7, 8], np.int32)
    tokens, mask = S.left_pad([row], th.pad_token_id)
    sampler = _text_sampler(module, max_new_tokens=N_NEW, pad_id=th.pad_token_id)
    got = np.asarray(sampler.generate(params, tokens, mask, jax.random.PRNGKey(0),
                                      feats[:, :frames[0]], frames)["tokens"])[0]
    want = _hf_generate(model, row, N_NEW, feats[0, :frames[0]])
    np.testing.assert_array_equal(got, want)


def test_per_row_eos_stopping_and_sampling(loaded):
    _, _, mc, params, module = loaded
    th = mc.thinker
    prompts = _text_prompts(np.random.default_rng(0), th)
    tokens, mask = S.left_pad(prompts, th.pad_token_id)
    pad = th.pad_token_id
    free = np.asarray(_text_sampler(module, max_new_tokens=N_NEW, pad_id=pad).generate(
        params, tokens, mask, jax.random.PRNGKey(0))["tokens"])
    eos = int(free[0, 3])  # row 0 stops at its 4th token; the others where (if) they emit it
    out = _text_sampler(module, max_new_tokens=N_NEW, eos_id=eos, pad_id=pad).generate(
        params, tokens, mask, jax.random.PRNGKey(0))
    got, lengths = np.asarray(out["tokens"]), np.asarray(out["lengths"])
    for i in range(len(prompts)):
        hits = np.flatnonzero(free[i] == eos)
        stop = int(hits[0]) + 1 if hits.size else N_NEW
        assert lengths[i] == stop and bool(out["done"][i]) == bool(hits.size)
        np.testing.assert_array_equal(got[i, :stop], free[i, :stop])
        assert (got[i, stop:] == pad).all()
    assert lengths[0] <= 4
    assert int(out["steps"]) == (lengths.max() if np.asarray(out["done"]).all() else N_NEW)
    # Sampling (the same compiled loop: temperature is traced): a fixed seed reproduces,
    # another seed differs.
    sampler = _text_sampler(module, max_new_tokens=N_NEW, temperature=1.5, pad_id=pad)
    a = np.asarray(sampler.generate(params, tokens, mask, jax.random.PRNGKey(5))["tokens"])
    b = np.asarray(sampler.generate(params, tokens, mask, jax.random.PRNGKey(5))["tokens"])
    c = np.asarray(sampler.generate(params, tokens, mask, jax.random.PRNGKey(6))["tokens"])
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_streaming_code2wav_equals_full_decode(loaded):
    _, _, mc, params, module = loaded
    cfg = mc.code2wav
    c2w = module.code2wav
    T = 22
    codes = np.random.default_rng(4).integers(0, cfg.codebook_size,
                                              (2, cfg.num_codebooks, T)).astype(np.int32)
    full = np.asarray(c2w_lib._decode_fast(c2w, params["code2wav"], jnp.asarray(codes)))
    assert full.shape == (2, c2w_lib.output_length(cfg, T))
    errs = []
    # Chunks of 8 (the last one 6) with the default (exact) context; the same chunks with the
    # context capped at 10 frames, below the receptive-field bound.
    for chunk, frames, left in ((8, T, None), (8, T, 10)):
        state = c2w_lib.init_stream(cfg, 2)
        pieces = []
        for start in range(0, frames, chunk):
            state, wav = c2w_lib.stream_step(c2w, params["code2wav"], state,
                                              codes[:, :, start:min(start + chunk, frames)],
                                              left, fast_compile=True)
            pieces.append(np.asarray(wav))
        stream = np.concatenate(pieces, axis=1)
        ref = full[:, :stream.shape[1]] if left is None else full
        assert stream.shape[1] == c2w_lib.output_length(cfg, frames)
        err = float(np.abs(stream - ref).max())
        if left is None:
            errs.append(err)
        else:  # a context shorter than the receptive-field bound: measured, not exact
            print(f"streaming Code2Wav with left_context={left}: max abs err {err:.2e}")
    print(f"streaming Code2Wav vs full decode: max abs err {max(errs):.2e} "
          f"(receptive field {c2w_lib.receptive_field(cfg)} frames)")
    assert max(errs) <= WAV_TOL
    assert np.abs(full).max() > 1e-3  # a non-trivial waveform


def test_talker_speech_stream_equals_loop(loaded):
    _, _, mc, params, module = loaded
    th = mc.thinker
    prompts = _text_prompts(np.random.default_rng(1), th)[:2]
    tokens, mask = S.left_pad(prompts, th.pad_token_id)
    text = np.asarray(_text_sampler(module, max_new_tokens=N_NEW, pad_id=th.pad_token_id).generate(
        params, tokens, mask, jax.random.PRNGKey(0))["tokens"])[:, :6]
    opts = S.SpeechOptions(tts_bos_id=143, tts_eos_id=144, tts_pad_id=142, speaker_id=50,
                           max_frames=10)
    sp = S.SpeechSampler(module, opts, fast_compile=True)
    state = sp.prepare(params, tokens, mask, text, np.array([6, 3]))
    key = jax.random.PRNGKey(3)
    loop = sp.generate(params, state, key)
    pieces = list(sp.stream(params, state, key, chunk=4))
    codes = np.concatenate([p[1] for p in pieces], axis=2)
    valid = np.concatenate([p[2] for p in pieces], axis=1)
    n = codes.shape[2]
    assert n == loop["codes"].shape[2] and [p[1].shape[2] for p in pieces][:-1] == [4] * (
        len(pieces) - 1)
    np.testing.assert_array_equal(codes, loop["codes"])
    np.testing.assert_array_equal(valid, loop["valid"])
    assert codes.max() < mc.code2wav.codebook_size and valid.any()
    # Frame-by-frame steps continue the same PRNG chain.
    st, rng = state, key
    for t in range(3):
        st, rng, frame, ok = sp.step(params, st, rng)
        np.testing.assert_array_equal(frame, codes[:, :, t])
        np.testing.assert_array_equal(ok, valid[:, t])
    # The chunks tile the waveform of the frames made (Code2Wav streaming itself is checked
    # against the full decode above).
    wav = np.concatenate([p[0] for p in pieces], axis=1)
    assert wav.shape == (2, c2w_lib.output_length(mc.code2wav, n)) and np.isfinite(wav).all()


def test_write_samples_transcripts_tokens_and_speech(loaded, tmp_path):
    import soundfile as sf

    from audiolm.presets.experiment import load_experiment_config

    _, _, mc, params, module = loaded
    config = load_experiment_config("configs/thinker_talker.py", "variant=tiny")
    config.model = mc.copy_and_resolve_references()
    config.model.aut.max_frames = 100  # short synthetic clips (data layout only)
    config.data.name = "synthetic"
    config.sample.update(num_samples=2, max_new_tokens=5, temperature=0.0)
    extra = config.sample.extra
    extra.update(tts_bos_token_id=143, tts_eos_token_id=144, tts_pad_token_id=142,
                 speaker_id=50, speaker_ids=[50], max_frames=3)
    summary = S.write_samples(module, params, config, str(tmp_path))
    folder = tmp_path / "samples"
    rows = [json.loads(line) for line in (folder / "transcripts.jsonl").read_text().splitlines()]
    data = np.load(folder / "tokens.npz")
    assert len(rows) == 2 and data["text"].shape == (2, 5)
    assert rows[0]["ids"] == [int(t) for t in data["text"][0, :data["text_lengths"][0]]
                              if t != mc.thinker.eos_token_id]
    assert data["codes"].shape[:2] == (2, mc.code2wav.num_codebooks)
    for i in range(2):
        wav, sr = sf.read(folder / f"speech_{i}.wav")
        assert sr == mc.code2wav.sample_rate
        assert len(wav) == max(int(data["frames"][i]) * c2w_lib.total_upsampling(mc.code2wav)
                               - c2w_lib.start_trim(mc.code2wav), 0)
    assert summary["speech_frames"] == data["frames"].tolist()
    del extra["speaker_id"]
    with pytest.raises(ConfigError, match=r"sample.extra.speaker_id=None"):
        S.write_samples(module, params, config, str(tmp_path))
