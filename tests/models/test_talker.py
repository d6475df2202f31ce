"""Talker + code predictor: config rules, HF config mapping, parity with transformers'
qwen3_omni_moe on a tiny random model (fp32), parameter counts of the published Talker."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from audiolm.config import ConfigError, count_params
from audiolm.importers import qwen3_omni_talker as conv
from audiolm.models import talker as tk
from audiolm.sample import rules
from audiolm.tasks import codes as codes_task

TOL = 1e-4  # max abs error allowed against the fp32 reference


def _jit(module, method=None, **static):
    """jit-compiled `module.apply` (one compilation instead of eager op-by-op dispatch)."""
    return jax.jit(lambda params, *args: module.apply({"params": params}, *args, method=method,
                                                      **static))


def _root(talker_cfg) -> ml_collections.ConfigDict:
    d = talker_cfg if isinstance(talker_cfg, dict) else talker_cfg.to_dict()
    return ml_collections.ConfigDict({"model": {"talker": d}})


# ---------------------------------------------------------------------------------------------
# Config rules.


def test_defaults_validate():
    tk.validate_talker(_root(tk.tiny_config()))


@pytest.mark.parametrize("field, value, needle", [
    ("num_kv_heads", 3, "model.talker.num_kv_heads=3"),
    ("head_dim", 7, "model.talker.head_dim=7"),
    ("num_experts_per_tok", 9, "model.talker.num_experts_per_tok=9"),
    ("vocab_size", 64, "model.talker.vocab_size=64"),
    ("codec_eos_id", 3, "model.talker.codec_eos_id=3"),
    ("codec_bos_id", 64, "model.talker.codec_bos_id=64"),
    ("moe_dispatch", "scatter", "model.talker.moe_dispatch='scatter'"),
    ("num_codebooks", 1, "model.talker.num_codebooks=1"),
    ("hidden_size", 32.0, "model.talker.hidden_size=32.0"),
    ("code_predictor.hidden_size", 16, "model.talker.code_predictor.hidden_size=16"),
    ("code_predictor.num_kv_heads", 3, "model.talker.code_predictor.num_kv_heads=3"),
])
def test_validation_errors_name_the_field(field, value, needle):
    cfg = tk.tiny_config().to_dict()
    section = cfg
    *parents, leaf = field.split(".")
    for p in parents:
        section = section[p]
    section[leaf] = value
    with pytest.raises(ConfigError) as err:
        tk.validate_talker(_root(cfg))
    assert needle in str(err.value)


def test_unknown_and_missing_fields():
    cfg = tk.tiny_config().to_dict()
    cfg["num_layer"] = 3
    with pytest.raises(ConfigError, match="model.talker.num_layer is not a known field"):
        tk.validate_talker(_root(cfg))
    cfg = tk.tiny_config().to_dict()
    del cfg["code_predictor"]["ffn_hidden"]
    with pytest.raises(ConfigError, match="model.talker.code_predictor.ffn_hidden is missing"):
        tk.validate_talker(_root(cfg))


def test_published_config_mapping():
    ref = pytest.importorskip("reference_qwen")
    cfg = conv.talker_config_from_hf(ref.PUBLISHED_CONFIG)
    tk.validate_talker(_root(cfg))
    assert (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads) == (1024, 20, 16, 2)
    assert (cfg.num_experts, cfg.num_experts_per_tok, cfg.moe_hidden) == (128, 6, 384)
    assert (cfg.shared_expert_hidden, cfg.num_codebooks, cfg.codebook_size) == (768, 16, 2048)
    assert (cfg.vocab_size, cfg.codec_eos_id, cfg.accept_hidden_layer) == (3072, 2150, 24)
    assert cfg.code_predictor.num_layers == 5 and cfg.code_predictor.num_kv_heads == 8
    bad = ref.deep_merge(ref.PUBLISHED_CONFIG, {"talker_config": {
        "code_predictor_config": {"num_code_groups": 8}}})
    with pytest.raises(ConfigError, match="num_code_groups"):
        conv.talker_config_from_hf(bad)


# ---------------------------------------------------------------------------------------------
# Parity with transformers on a tiny random model.


@pytest.fixture(scope="module")
def ref_model(tmp_path_factory):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    ref = pytest.importorskip("reference_qwen")
    hf_cfg = ref.hf_config(ref.tiny_config_dict())
    model = ref.build_model(hf_cfg, seed=0)
    path = str(tmp_path_factory.mktemp("qwen_tiny"))
    ref.save_model(model, path)
    tensors, get_tensor = ref.component_tensors(path, "talker.")

    cfg = conv.talker_config_from_hf(hf_cfg.to_dict())
    tk.validate_talker(_root(cfg))
    params, used = conv.convert_talker(get_tensor, tensors.keys(), cfg)
    return dict(torch=torch, hf=model.talker, cfg=cfg, params=params, used=used,
                keys=set(tensors), path=path)


def test_every_checkpoint_tensor_is_used(ref_model):
    assert ref_model["used"] == ref_model["keys"]
    # the converted tree has exactly the shapes of our module
    shapes = jax.eval_shape(lambda: tk.init_params(ref_model["cfg"], jax.random.PRNGKey(0)))
    got = jax.tree_util.tree_map(lambda x: tuple(np.shape(x)), ref_model["params"])
    want = jax.tree_util.tree_map(lambda x: tuple(x.shape), shapes)
    assert got == want


def test_load_pretrained_gives_these_params(ref_model):
    """The family loader (`load_pretrained` of a save_pretrained directory) maps the Talker
    config and tensors exactly as the converters tested here."""
    from audiolm.importers import qwen3_omni

    model_config, params = qwen3_omni.load_pretrained(ref_model["path"])
    assert model_config.talker.to_dict() == ref_model["cfg"].to_dict()
    got = jax.tree_util.tree_map(np.asarray, params["talker"])
    want = jax.tree_util.tree_map(np.asarray, ref_model["params"])
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_array_equal(a, b)


def test_talker_logits_and_projections_match(ref_model):
    torch, hf, cfg, params = (ref_model[k] for k in ("torch", "hf", "cfg", "params"))
    rng = np.random.default_rng(0)
    b, t = 2, 7
    x = rng.normal(size=(b, t, cfg.hidden_size)).astype(np.float32)
    thinker = rng.normal(size=(b, t, cfg.thinker_hidden_size)).astype(np.float32)
    with torch.no_grad():
        out = hf(inputs_embeds=torch.from_numpy(x), output_router_logits=True)
        want = out.logits.numpy()
        router = hf.model.layers[0].mlp.gate(torch.from_numpy(x).reshape(-1, cfg.hidden_size))
        want_text = hf.text_projection(torch.from_numpy(thinker)).numpy()
        want_hidden = hf.hidden_projection(torch.from_numpy(thinker)).numpy()
    # the routed experts really differ between tokens (so routing is exercised)
    assert len(set(router[2].flatten().tolist())) >= 3

    module = tk.build(cfg)
    got = _jit(module)(params, jnp.asarray(x))
    err = float(np.max(np.abs(np.asarray(got["logits"]) - want)))
    assert got["logits"].shape == (b, t, cfg.vocab_size)
    assert err <= TOL, err  # measured 6.0e-08
    got_text = _jit(module, tk.Talker.project_text)(params, jnp.asarray(thinker))
    got_hidden = _jit(module, tk.Talker.project_hidden)(params, jnp.asarray(thinker))
    err_text = float(np.max(np.abs(np.asarray(got_text) - want_text)))
    err_hidden = float(np.max(np.abs(np.asarray(got_hidden) - want_hidden)))
    print(f"MEASURED talker logits {err:.1e} text_projection {err_text:.1e} "
          f"hidden_projection {err_hidden:.1e}")
    assert err_text <= TOL and err_hidden <= TOL  # measured 3.7e-09, 7.5e-09
    # capacity dispatch with ample capacity gives the same logits
    cfg_cap = ml_collections.ConfigDict(cfg.to_dict())
    cfg_cap.moe_dispatch = "capacity"
    cfg_cap.moe_capacity_factor = float(cfg.num_experts)
    got_cap = _jit(tk.build(cfg_cap))(params, jnp.asarray(x))
    err_cap = float(np.max(np.abs(np.asarray(got_cap["logits"]) - want)))
    print(f"MEASURED talker logits, capacity dispatch {err_cap:.1e}")
    assert err_cap <= TOL


def _frame_codes(rng, cfg, b, t):
    codes = rng.integers(0, cfg.codebook_size, size=(b, cfg.num_codebooks, t))
    return codes.astype(np.int32)


def test_code_predictor_teacher_forced_logits_match(ref_model):
    torch, hf, cfg, params = (ref_model[k] for k in ("torch", "hf", "cfg", "params"))
    rng = np.random.default_rng(1)
    b, t, g = 2, 5, cfg.num_codebooks
    x = rng.normal(size=(b, t, cfg.hidden_size)).astype(np.float32)
    codes = _frame_codes(rng, cfg, b, t)
    module = tk.build(cfg)
    tk.check_codes(codes, cfg.num_codebooks, cfg.codebook_size)
    got = _jit(module)(params, jnp.asarray(x), jnp.asarray(codes))
    assert got["predictor_logits"].shape == (b, t, g - 1, cfg.codebook_size)

    cp = hf.code_predictor
    with torch.no_grad():
        hidden = hf(inputs_embeds=torch.from_numpy(x),
                    output_hidden_states=True).hidden_states[0][-1]  # final-normed
        c = torch.from_numpy(codes.astype(np.int64))
        seq = [hidden, hf.model.codec_embedding(c[:, 0])]
        seq += [cp.model.codec_embedding[j - 1](c[:, j]) for j in range(1, g - 1)]
        seq = torch.stack(seq, dim=2).reshape(b * t, g, -1)  # each frame its own sequence
        h = cp.model(inputs_embeds=seq).last_hidden_state
        want = torch.stack([cp.lm_head[p - 1](h[:, p]) for p in range(1, g)], dim=1)
        want = want.reshape(b, t, g - 1, -1).numpy()
    err = float(np.max(np.abs(np.asarray(got["predictor_logits"]) - want)))
    print(f"MEASURED code predictor teacher-forced logits {err:.1e}")
    assert err <= TOL, err  # measured 8.9e-08

    # next-step Talker input: sum of the frame's code embeddings
    with torch.no_grad():
        want_sum = hf.model.codec_embedding(c[:, 0]) + sum(
            cp.model.codec_embedding[j - 1](c[:, j]) for j in range(1, g))
    got_sum = _jit(module, tk.Talker.embed_frames)(params, jnp.asarray(codes))
    assert float(np.max(np.abs(np.asarray(got_sum) - want_sum.numpy()))) <= TOL


def test_code_predictor_greedy_generation_matches(ref_model):
    torch, hf, cfg, params = (ref_model[k] for k in ("torch", "hf", "cfg", "params"))
    rng = np.random.default_rng(2)
    b, g = 3, cfg.num_codebooks
    h = rng.normal(size=(b, cfg.hidden_size)).astype(np.float32)
    code0 = rng.integers(0, cfg.codebook_size, size=(b,)).astype(np.int32)
    with torch.no_grad():
        e0 = hf.model.codec_embedding(torch.from_numpy(code0.astype(np.int64)))
        inp = torch.cat([torch.from_numpy(h)[:, None], e0[:, None]], dim=1)
        res = hf.code_predictor.generate(inputs_embeds=inp, max_new_tokens=g - 1,
                                         do_sample=False, return_dict_in_generate=True)
        want = res.sequences[:, -(g - 1):].numpy()
    module = tk.build(cfg)
    greedy = _jit(module, tk.Talker.predict_frame, sample=rules.sample_logits)  # temperature 0
    codes, emb = greedy(params, jnp.asarray(h), jnp.asarray(code0), jax.random.PRNGKey(0))
    np.testing.assert_array_equal(np.asarray(codes[:, 1:]), want)
    np.testing.assert_array_equal(np.asarray(codes[:, 0]), code0)
    # the returned embedding is the next Talker input of that frame
    again = _jit(module, tk.Talker.embed_frames)(params, codes[:, :, None])
    assert float(np.max(np.abs(np.asarray(again[:, 0]) - np.asarray(emb)))) <= 1e-5
    # sampling at a temperature draws valid codes, reproducibly per key
    sample = _jit(module, tk.Talker.predict_frame,
                  sample=functools.partial(rules.sample_logits, temperature=1.0, top_k=5))
    s1, _ = sample(params, jnp.asarray(h), jnp.asarray(code0), jax.random.PRNGKey(3))
    s2, _ = sample(params, jnp.asarray(h), jnp.asarray(code0), jax.random.PRNGKey(3))
    np.testing.assert_array_equal(np.asarray(s1), np.asarray(s2))
    assert int(np.max(np.asarray(s1))) < cfg.codebook_size


def test_cached_decoding_equals_full_forward(ref_model):
    cfg, params = ref_model["cfg"], ref_model["params"]
    module = tk.build(cfg)
    rng = np.random.default_rng(4)
    b, t = 2, 6
    x = jnp.asarray(rng.normal(size=(b, t, cfg.hidden_size)), jnp.float32)
    full = _jit(module, tk.Talker.decode)(params, x)["logits"]
    step = jax.jit(lambda p, xs, caches: module.apply({"params": p}, xs, None, caches,
                                                      method=tk.Talker.decode))
    out = {"caches": module.init_caches(b, t)}
    logits = []
    for i in range(0, t, 2):  # chunks of two positions (one compilation)
        out = step(params, x[:, i:i + 2], out["caches"])
        logits.append(out["logits"])
    err = float(np.max(np.abs(np.concatenate(logits, axis=1) - np.asarray(full))))
    print(f"MEASURED cached vs full Talker logits {err:.1e}")
    assert err <= 1e-5, err


def test_codec_losses_and_a_training_step(ref_model):
    cfg, params = ref_model["cfg"], ref_model["params"]
    module = tk.build(cfg)
    rng = np.random.default_rng(5)
    b, t = 2, 5
    x = jnp.asarray(rng.normal(size=(b, t, cfg.hidden_size)), jnp.float32)
    codes = jnp.asarray(_frame_codes(rng, cfg, b, t))
    mask = jnp.asarray([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], jnp.float32)

    def loss(p):
        out = module.apply({"params": p}, x, codes)
        losses = codes_task.talker_frame_losses(out, codes, mask)
        return losses["codebook0_ce"] + losses["predictor_ce"], (losses, out)

    value_and_grad = jax.jit(jax.value_and_grad(loss, has_aux=True))  # compiled once
    (value, (losses, out)), grads = value_and_grad(params)
    lp0 = jax.nn.log_softmax(np.asarray(out["logits"], np.float64), axis=-1)
    ce0 = [-lp0[i, j, codes[i, 0, j]] for i in range(b) for j in range(t) if mask[i, j]]
    assert abs(float(losses["codebook0_ce"]) - np.mean(ce0)) <= 1e-5
    assert float(losses["frames"]) == 7
    lp = jax.nn.log_softmax(np.asarray(out["predictor_logits"], np.float64), axis=-1)
    ce = [-lp[i, j, k - 1, codes[i, k, j]] for i in range(b) for j in range(t) if mask[i, j]
          for k in range(1, cfg.num_codebooks)]
    assert abs(float(losses["predictor_ce"]) - np.mean(ce)) <= 1e-5
    # every part of the Talker used by the loss gets a gradient; one SGD step lowers the loss
    for name in ("codec_embedding", "codec_head", "layers_0", "code_predictor"):
        norm = sum(float(jnp.sum(jnp.square(g))) for g in jax.tree_util.tree_leaves(grads[name]))
        assert norm > 0, name
    stepped = jax.tree_util.tree_map(lambda p, g: p - 0.5 * g, params, grads)
    (after, _), _ = value_and_grad(stepped)
    assert float(after) < float(value)


def test_mask_codec_logits():
    cfg = tk.tiny_config()
    logits = jnp.zeros((2, cfg.vocab_size))
    masked = np.asarray(tk.mask_codec_logits(logits, cfg))
    allowed = np.isfinite(masked[0])
    assert allowed[:cfg.codebook_size].all() and allowed[cfg.codec_eos_id]
    assert allowed.sum() == cfg.codebook_size + 1


def test_bad_inputs_raise_before_compute(ref_model):
    cfg, params = ref_model["cfg"], ref_model["params"]
    module = tk.build(cfg)
    x = jnp.zeros((1, 3, cfg.hidden_size))
    g, card = cfg.num_codebooks, cfg.codebook_size
    with pytest.raises(ValueError, match=f"must have {g} codebooks"):
        module.apply({"params": params}, x, jnp.zeros((1, g - 1, 3), jnp.int32))
    with pytest.raises(ValueError, match=rf"ids must be in \[0, {card}\)"):
        module.apply({"params": params}, x, jnp.full((1, g, 3), card, jnp.int32))
    with pytest.raises(ValueError, match="inputs_embeds: shape"):
        module.apply({"params": params}, jnp.zeros((1, 3, cfg.hidden_size + 1)))
    with pytest.raises(ValueError, match="thinker_embeds: shape"):
        module.apply({"params": params}, jnp.zeros((1, 3, 5)), method=tk.Talker.project_text)
    with pytest.raises(ValueError, match=rf"codec ids: ids must be in \[0, {cfg.vocab_size}\)"):
        module.apply({"params": params}, jnp.array([[cfg.vocab_size]]),
                     method=tk.Talker.embed_codec)


# ---------------------------------------------------------------------------------------------
# Published parameter counts.


def test_published_param_counts_match_transformers_meta_model():
    ref = pytest.importorskip("reference_qwen")
    pytest.importorskip("transformers")
    cfg = conv.talker_config_from_hf(ref.PUBLISHED_CONFIG)
    shapes = jax.eval_shape(lambda: tk.init_params(cfg, jax.random.PRNGKey(0)))
    n = {k: count_params(v)["total"] for k, v in shapes.items()}
    counts = ref.meta_counts(ref.hf_config(ref.PUBLISHED_CONFIG))
    decoder = n["codec_embedding"] + n["norm"] + sum(
        v for k, v in n.items() if k.startswith("layers_"))
    assert decoder == counts["talker_model"] == 3_167_291_392  # "Talker 3.17B"
    assert n["code_predictor"] == counts["talker_code_predictor"] == 141_570_304  # "MTP 141.6M"
    assert n["text_projection"] + n["hidden_projection"] == counts["talker_projections"]
    assert n["codec_head"] == counts["talker_codec_head"]
    assert sum(n.values()) == counts["talker"] == 3_324_596_480
    # describe: active per token counts top_k / num_experts of the routed experts
    desc = tk.describe_params(cfg)
    assert desc["talker"]["total"] + desc["talker_code_predictor"]["total"] == sum(n.values())
    routed = 20 * 3 * 128 * 1024 * 384
    assert desc["talker"]["active"] == desc["talker"]["total"] - routed + routed * 6 // 128
    assert desc["talker_code_predictor"]["embedding"] == 15 * 2048 * 1024
