"""Kyutai importer and config files vs the `moshi` 0.2.13 package (fp32, one thread).

Tolerances: logits <= 1e-4 absolute (fp32; measured ~3e-6), generation token-identical.
"""

from __future__ import annotations

import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm import patterns
from audiolm.importers import moshi as ck
from audiolm.config import ConfigError, spec_to_section
from audiolm.models import moshi as M
from audiolm.nn.compile import fast_jit
from audiolm.presets import moshi as cm
from audiolm.presets.experiment import load_experiment_config

ref_lib = pytest.importorskip("tests.reference_moshi")
torch = ref_lib.torch
TOL = 1e-4


def _tiny_gqa():
    m = cm.tiny()
    m.temporal.num_kv_heads = 2  # GQA (Kyutai kv_repeat=2)
    return m


def _tiny_conditioned():
    m = cm.tiny()
    m.temporal.cross_attention = True
    m.temporal.layer_scale = 0.5
    m.depformer.layer_scale = 0.3
    m.demux_second_text_stream = True
    m.extra_heads.num_heads = 2
    m.cross_pos_emb = True
    m.conditioners = {"cfg": spec_to_section(cm.lut(3, 5, ("a", "b", "c"))),
                      "spk": spec_to_section(cm.tensor_conditioner(6))}
    return m


def _imported(m, tmp_path, seed=0):
    ref = ref_lib.reference_model(m, seed=seed)
    folder = ref_lib.save_checkpoint(ref, m, str(tmp_path / "ckpt"))
    config, params = ck.load_pretrained(folder)
    return ref, config, params


def _ours(config, params, codes, conditions=None):
    spec = M.spec_from_config(config)
    module = M.build(config)
    @fast_jit
    def forward(params, codes, conditions):
        inputs, targets, _ = M.delayed_inputs(spec, codes)
        out = module.apply({"params": params}, inputs, conditions)
        audio = module.apply({"params": params}, targets, out["hidden"],
                             method=M.MoshiLM.depformer_forward)
        return out, audio

    out, audio = forward(params, jnp.asarray(codes), conditions)
    (text, _), (audio, _) = M.undelay_logits(spec, out["text_logits"], audio)
    return np.asarray(text), np.asarray(audio), out


def _max_err(ref, ours, mask):
    return float(np.max(np.abs(np.where(mask[..., None], ref - ours, 0.0))))


def test_parity_tiny_mixed_delays(tmp_path):
    m = _tiny_gqa()
    assert len(set(m.delays)) == 3  # delays 0, 1 and 2 across the streams
    ref, config, params = _imported(m, tmp_path)
    rng = np.random.default_rng(0)
    codes = np.concatenate([rng.integers(0, 32, (2, 1, 7)), rng.integers(0, 16, (2, 4, 7))], 1)
    codes[0, 2, 3] = -1  # a zero token: masked by both
    with torch.no_grad():
        out = ref(torch.from_numpy(codes).long())
    text, audio, _ = _ours(config, params, codes.astype(np.int32))
    text_err = _max_err(out.text_logits.numpy(), text, out.text_mask.numpy())
    audio_err = _max_err(out.logits.numpy(), audio, out.mask.numpy())
    print(f"moshi parity tiny: text {text_err:.2e} audio {audio_err:.2e}")
    assert text_err <= TOL and audio_err <= TOL
    assert out.mask.numpy().sum() > 20  # compared entries exist (delayed tails excluded)


def test_parity_conditioned_cross_attention_demux(tmp_path):
    from moshi.conditioners.base import TensorCondition

    m = _tiny_conditioned()
    ref, config, params = _imported(m, tmp_path, seed=1)
    rng = np.random.default_rng(1)
    B, T = 2, 6
    text = np.maximum(rng.integers(0, 33 * 33, (B, 1, T)) - 33, -1)  # two demuxed streams
    codes = np.concatenate([text, rng.integers(0, 16, (B, 4, T))], 1).astype(np.int32)
    spk = rng.standard_normal((B, 3, 6)).astype(np.float32)
    spk_mask = np.array([[1, 1, 0], [1, 1, 1]], bool)
    conds = {"cfg": np.array([1, 3], np.int32), "spk": spk, "spk_mask": spk_mask}  # 3 = absent
    prov = ref.condition_provider
    with torch.no_grad():
        c_cfg = prov.conditioners["cfg"](prov.conditioners["cfg"].prepare(["b", None]))
        c_spk = prov.conditioners["spk"](TensorCondition(torch.from_numpy(spk),
                                                         torch.from_numpy(spk_mask)))
        tensors = {"cfg": c_cfg, "spk": c_spk}
        out = ref(torch.from_numpy(codes).long(), tensors)
        spec = M.spec_from_config(config)
        inputs, _, _ = M.delayed_inputs(spec, jnp.asarray(codes))
        h, _ = ref.forward_text(torch.from_numpy(np.asarray(inputs)).long(),
                                ref.fuser.get_sum(tensors), ref.fuser.get_cross(tensors))
        extra_ref = torch.stack([head(h) for head in ref.extra_heads], 2).numpy()
    text, audio, ours = _ours(config, params, codes, conds)
    text_err = _max_err(out.text_logits.numpy(), text, out.text_mask.numpy())
    audio_err = _max_err(out.logits.numpy(), audio, out.mask.numpy())
    extra_err = float(np.max(np.abs(extra_ref - np.asarray(ours["extra"]))))
    print(f"moshi parity conditioned: text {text_err:.2e} audio {audio_err:.2e} "
          f"extra {extra_err:.2e}")
    assert max(text_err, audio_err, extra_err) <= TOL


def test_parity_layernorm_plain_mlp_shared_depformer(tmp_path):
    """The LayerNorm + plain GELU temporal variant (tts_v0_1 style); depformer weights shared
    across slices (weights_per_step off) with one input projection per slice."""
    m = cm.tiny()
    m.temporal.update(ffn="plain", activation="gelu", ffn_hidden=64, norm="layer", norm_eps=1e-5)
    m.depformer.update(weights_per_step=False, schedule=(), multi_linear=True, low_rank=0)
    ref, config, params = _imported(m, tmp_path, seed=5)
    assert sum(k.startswith("depformer_in.") for k in ref.state_dict()) == 3
    codes = np.random.default_rng(5).integers(0, 16, (2, 5, 6)).astype(np.int32)
    with torch.no_grad():
        out = ref(torch.from_numpy(codes).long())
    text, audio, _ = _ours(config, params, codes)
    text_err = _max_err(out.text_logits.numpy(), text, out.text_mask.numpy())
    audio_err = _max_err(out.logits.numpy(), audio, out.mask.numpy())
    print(f"moshi parity layernorm/plain: text {text_err:.2e} audio {audio_err:.2e}")
    assert text_err <= TOL and audio_err <= TOL


def test_parity_no_depformer_stt_like(tmp_path):
    """STT layout: no depformer, extra heads; Kyutai's unused `depformer_in` is dropped."""
    m = cm.tiny()
    m.depformer = spec_to_section(cm.NO_DEPFORMER)
    m.delays = (0,) * 5
    m.extra_heads.num_heads = 2
    ref, config, params = _imported(m, tmp_path, seed=4)
    assert "depformer_in.0.weight" in ref.state_dict()
    spec = M.spec_from_config(config)
    codes = np.random.default_rng(4).integers(0, 16, (2, 5, 6)).astype(np.int32)
    inputs, _, _ = M.delayed_inputs(spec, jnp.asarray(codes))
    with torch.no_grad():
        h, text_ref = ref.forward_text(torch.from_numpy(np.asarray(inputs)).long())
        extra_ref = torch.stack([head(h) for head in ref.extra_heads], 2).numpy()
    module = M.build(config)
    out = fast_jit(lambda p, x: module.apply({"params": p}, x))(params, inputs)
    err = max(float(np.max(np.abs(text_ref[:, 0].numpy() - np.asarray(out["text_logits"])))),
              float(np.max(np.abs(extra_ref - np.asarray(out["extra"])))))
    print(f"moshi parity stt-like: {err:.2e}")
    assert err <= TOL


def greedy_generate(module, params, user, frames):
    """Greedy decode with the per-step API; stream delays through `patterns.steps_for`.

    user [B, K - dep_q, frames + 1]: the non-generated codebooks as LMGen receives them (its
    step-o input is frame o-1 of the training layout; its frame 0 is never read).
    Returns text [B, frames], audio [B, dep_q, frames] as generated at each step.
    """
    spec = module.spec
    B = user.shape[0]
    pattern = M.delay_pattern(spec, frames + 1)
    init = M.initial_tokens(spec)[:, 0]
    state = module.init_state(B)
    step = fast_jit(lambda p, col, st: module.apply({"params": p}, col, st,
                                                    method=M.MoshiLM.step))
    dsteps = [fast_jit(lambda p, prev, h, c, k=k: module.apply(
        {"params": p}, k, prev, h, c, method=M.MoshiLM.depformer_step))
        for k in range(spec.dep_q)]
    generated, texts, audios = {}, [], []
    for o in range(frames):
        col = np.tile(init, (B, 1))
        for t, q in patterns.steps_for(pattern, o):
            col[:, q] = (user[:, q - 1 - spec.dep_q, t + 1] if q > spec.dep_q
                         else generated[(q, t)])
        logits, h, state = step(params, jnp.asarray(col[:, :, None], jnp.int32), state)
        out = [jnp.argmax(logits, -1).astype(jnp.int32)]
        cache = module.init_depformer_cache(B)
        for k in range(spec.dep_q):
            lg, cache = dsteps[k](params, out[-1], h, cache)
            out.append(jnp.argmax(lg, -1).astype(jnp.int32))
        out = np.stack([np.asarray(x) for x in out], 1)
        for t, q in patterns.steps_for(pattern, o + 1):
            if q <= spec.dep_q:
                generated[(q, t)] = out[:, q]
        texts.append(out[:, 0])
        audios.append(out[:, 1:])
    return np.stack(texts, 1), np.stack(audios, 2)


def test_greedy_generation_matches_lmgen(tmp_path):
    from moshi.models.lm import LMGen

    m = cm.tiny()
    m.temporal.context = 5  # 16 steps wrap the ring KV cache three times
    ref, config, params = _imported(m, tmp_path, seed=3)
    module = M.build(config)
    B, N = 2, 16
    user = np.random.default_rng(1).integers(0, 16, (B, 4 - 3, N + 1))
    texts, audios = [], []
    gen = LMGen(ref, use_sampling=False, on_text_hook=lambda t: texts.append(t.clone()),
                on_audio_hook=lambda a: audios.append(a.clone()))
    with gen.streaming(B):
        for o in range(N):
            gen.step(torch.from_numpy(user[:, :, o:o + 1]).long())
    ref_text = torch.stack(texts, 1).numpy()
    ref_audio = torch.stack(audios, 2).numpy()
    text, audio = greedy_generate(module, params, user, N)
    np.testing.assert_array_equal(text, ref_text)
    np.testing.assert_array_equal(audio, ref_audio)
    assert len(np.unique(ref_audio)) > 3  # not a degenerate constant stream


def test_every_tensor_accounted_for(tmp_path):
    m = cm.tiny()
    ref = ref_lib.reference_model(m, seed=0)
    state = {k: v.numpy() for k, v in ref.state_dict().items()}
    params = ck.convert_state_dict(m, state)
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
    assert n_params == sum(v.size for v in state.values())
    with pytest.raises(ValueError,
                       match=r"1 checkpoint tensors are not used by the config's layout: stray"):
        ck.convert_state_dict(m, dict(state, **{"stray.weight": np.zeros(3, np.float32)}))
    missing = dict(state)
    del missing["linears.2.weight"]
    with pytest.raises(ValueError, match=r"missing tensor linears\.2\.weight"):
        ck.convert_state_dict(m, missing)
    # A checkpoint of another config is refused before anything is built.
    other = cm.tiny()
    other.depformer.num_slices = 2
    other.depformer.schedule = (0, 1)
    with pytest.raises(ValueError):
        ck.convert_state_dict(other, state)


def test_stacked_per_step_projections_are_split():
    """Older Kyutai files store per-step projections stacked as `in_proj_weight`."""
    m = cm.tiny()
    ref = ref_lib.reference_model(m, seed=2)
    state = {k: v.numpy() for k, v in ref.state_dict().items()}
    stacked = {}
    for k, v in state.items():
        for plural, singular in (("in_projs", "in_proj_weight"), ("out_projs", "out_proj.weight")):
            marker = f".self_attn.{plural}."
            if marker in k and k.startswith("depformer."):
                prefix = k.split(marker)[0] + ".self_attn."
                sets = sorted({int(x.split(marker)[1].split(".")[0]) for x in state
                               if x.startswith(prefix + plural)})
                stacked[prefix + singular] = np.concatenate(
                    [state[f"{prefix}{plural}.{i}.weight"] for i in sets])
                break
        else:
            stacked[k] = v
    assert len(stacked) < len(state)
    a = ck.convert_state_dict(m, state)
    b = ck.convert_state_dict(m, stacked)
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


# -- official config files -----------------------------------------------------------------

FILES = sorted(glob.glob(os.path.join(ref_lib.CONFIG_DIR, "*")))


def test_reference_config_dir_present():
    assert len(FILES) == 8, FILES


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_every_official_file_loads_and_validates(path):
    loaded = ck.load_config_file(path)
    M.rules(__import__("ml_collections").ConfigDict({"model": loaded.model}))
    spec = M.spec_from_config(loaded.model)
    assert len(spec.delays) == 1 + spec.audio_codebooks


MATCHES = {
    "config-stt-en-hf.toml": "stt_2_6b_en",
    "config-stt-en_fr-hf.toml": "stt_1b_en_fr",
    "config-tts.toml": "tts_1_6b_en_fr",
    "s2st-1b.toml": "s2st_1b",
    "moshi_7b_202409.json": "moshi_7b_202409",
    "moshi_dev_2b.json": "moshi_dev_2b",
    "stt_2.6b_en.json": "stt_2_6b_en",
    "stt_1b_enfr.json": "stt_1b_en_fr",
}


@pytest.mark.parametrize("name", sorted(MATCHES))
def test_official_file_equals_preset(name):
    loaded = ck.load_config_file(os.path.join(ref_lib.CONFIG_DIR, name))
    assert loaded.model.to_dict() == cm.PRESETS[MATCHES[name]]().to_dict()


def test_file_fields_kept_and_get_config_file_arg():
    tts = ck.load_config_file(os.path.join(ref_lib.CONFIG_DIR, "config-tts.toml"))
    assert tts.sample_extra.py_n_q == 24 and tts.sample_extra.py_cfg_coef == 2.0
    stt = ck.load_config_file(os.path.join(ref_lib.CONFIG_DIR, "stt_2.6b_en.json"))
    assert stt.sample_extra.stt_config.audio_delay_seconds == 2.5
    config = load_experiment_config("configs/moshi.py", f"file={os.path.join(ref_lib.CONFIG_DIR, 'moshi_dev_2b.json')}")
    assert config.model.to_dict() == cm.moshi_dev_2b().to_dict()


def test_bad_config_files_raise(tmp_path):
    good = json.load(open(os.path.join(ref_lib.CONFIG_DIR, "moshi_7b_202409.json")))
    cases = [
        (dict(good, delays=good["delays"][:-1]), r"model.delays.*one delay per stream"),
        (dict(good, n_q=65, delays=[0] * 66), r"model.audio_codebooks=65: must be <= 64"),
        (dict(good, card=0), r"model.audio_vocab_size=1"),
        (dict(good, num_heads=33), r"model.temporal.hidden_size=4096: must be divisible"),
        (dict(good, dep_q=17), r"model.depformer.num_slices=17: must be <= "),
        (dict(good, bogus=1), r"bogus=1: is not a known Kyutai config field"),
    ]
    for i, (raw, match) in enumerate(cases):
        path = tmp_path / f"c{i}.json"
        path.write_text(json.dumps(raw))
        with pytest.raises(ConfigError, match=match):
            ck.load_config_file(str(path))


# -- parameter counts at full size -----------------------------------------------------------

PUBLISHED = {"moshi_7b_202409": 7.688e9, "moshi_dev_2b": 3.730e9, "stt_2_6b_en": 2.617e9,
             "stt_1b_en_fr": 0.989e9, "tts_1_6b_en_fr": 1.837e9}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_param_counts_match_reference_meta_device(name):
    m = cm.PRESETS[name]()
    ours = sum(c["total"] for c in M.describe_params(m).values())
    model = ref_lib.reference_model(m, device="meta")
    ref = sum(p.numel() for p in model.parameters())
    dead = 0
    if m.depformer.num_slices == 0:
        # LMModel builds `depformer_in` (dim x default depformer_dim 256) even without a
        # depformer; it is never used, so audiolm has no such parameter.
        dead = sum(p.numel() for p in model.depformer_in.parameters())
    print(f"{name}: ours {ours:,} reference {ref:,} (unused in reference: {dead:,})")
    assert ours == ref - dead
    assert abs(ours - PUBLISHED[name]) < 0.5e6 + 0.0005e9
