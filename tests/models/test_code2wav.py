"""Code2Wav: config rules, output length, HF config mapping, waveform parity with transformers'
qwen3_omni_moe on a tiny random model (fp32), chunked decode, published parameter count."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from audiolm.config import ConfigError, count_params
from audiolm.importers import qwen3_omni_talker as conv
from audiolm.models import code2wav as cw
from audiolm.models import talker as tk

TOL = 1e-4  # max abs error allowed against the fp32 reference


def _root(cfg) -> ml_collections.ConfigDict:
    d = cfg if isinstance(cfg, dict) else cfg.to_dict()
    return ml_collections.ConfigDict({"model": {"code2wav": d}})


def test_defaults_validate():
    cw.validate_code2wav(_root(cw.tiny_config()))


@pytest.mark.parametrize("field, value, needle", [
    ("num_kv_heads", 3, "model.code2wav.num_kv_heads=3"),
    ("sliding_window", 0, "model.code2wav.sliding_window=0"),
    ("decoder_dim", 30, "model.code2wav.decoder_dim=30"),
    ("upsample_rates", (4, 0), "model.code2wav.upsample_rates[1]=0"),
    ("upsample_rates", (), "model.code2wav.upsample_rates=()"),
    ("residual_dilations", "139", "model.code2wav.residual_dilations='139'"),
    ("head_dim", 5, "model.code2wav.head_dim=5"),
    ("rms_norm_eps", 0.0, "model.code2wav.rms_norm_eps=0.0"),
    ("sample_rate", 0, "model.code2wav.sample_rate=0"),
])
def test_validation_errors_name_the_field(field, value, needle):
    cfg = cw.tiny_config().to_dict()
    cfg[field] = value
    with pytest.raises(ConfigError) as err:
        cw.validate_code2wav(_root(cfg))
    assert needle in str(err.value)


def test_talker_code2wav_codebooks_must_match():
    talker = tk.tiny_config()
    c2w = cw.tiny_config()
    root = ml_collections.ConfigDict({"model": {"talker": talker.to_dict(),
                                                "code2wav": c2w.to_dict()}})
    cw.validate_codebook_sync(root)
    root.model.code2wav.num_codebooks = 8
    with pytest.raises(ConfigError, match="model.talker.num_codebooks=4 but "
                                          "model.code2wav.num_codebooks=8: they must match"):
        cw.validate_codebook_sync(root)


def test_published_config_and_output_length():
    ref = pytest.importorskip("reference_qwen")
    cfg = conv.code2wav_config_from_hf(ref.PUBLISHED_CONFIG)
    cw.validate_code2wav(_root(cfg))
    assert cw.total_upsampling(cfg) == 1920
    assert cw.total_upsampling(cfg) * 12.5 == cfg.sample_rate
    assert cw.output_length(cfg, 20) == 37845 == ((((4 * 20 - 1) * 8 - 1) * 5 - 1) * 4 - 1) * 3
    assert cw.start_trim(cfg) == 555
    for t in (1, 7, 20):
        assert cw.output_length(cfg, t) == t * 1920 - 555


# ---------------------------------------------------------------------------------------------
# Parity with transformers.


@pytest.fixture(scope="module")
def ref_model(tmp_path_factory):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    ref = pytest.importorskip("reference_qwen")
    hf_cfg = ref.hf_config(ref.tiny_config_dict())
    model = ref.build_model(hf_cfg, seed=1)
    path = str(tmp_path_factory.mktemp("qwen_tiny_c2w"))
    ref.save_model(model, path)
    where, get_tensor = ref.component_tensors(path, "code2wav.")

    cfg = conv.code2wav_config_from_hf(hf_cfg.to_dict())
    cw.validate_code2wav(_root(cfg))
    params, used = conv.convert_code2wav(get_tensor, where.keys(), cfg)
    return dict(torch=torch, hf=model.code2wav, cfg=cfg, params=params, used=used,
                keys=set(where), path=path)


def test_every_checkpoint_tensor_is_used(ref_model):
    assert ref_model["used"] == ref_model["keys"]
    shapes = jax.eval_shape(lambda: cw.init_params(ref_model["cfg"], jax.random.PRNGKey(0)))
    got = jax.tree_util.tree_map(lambda x: tuple(np.shape(x)), ref_model["params"])
    want = jax.tree_util.tree_map(lambda x: tuple(x.shape), shapes)
    assert got == want


def test_load_pretrained_gives_these_params(ref_model):
    """The family loader maps the Code2Wav config and tensors exactly as the converter."""
    from audiolm.importers import qwen3_omni

    model_config, params = qwen3_omni.load_pretrained(ref_model["path"])
    assert model_config.code2wav.to_dict() == ref_model["cfg"].to_dict()
    got, want = params["code2wav"], ref_model["params"]
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_waveform_matches_transformers(ref_model):
    torch, hf, cfg, params = (ref_model[k] for k in ("torch", "hf", "cfg", "params"))
    rng = np.random.default_rng(0)
    t = 20  # > sliding_window, so the window mask matters
    codes = rng.integers(0, cfg.codebook_size, size=(2, cfg.num_codebooks, t)).astype(np.int32)
    with torch.no_grad():
        want = hf(torch.from_numpy(codes.astype(np.int64)))[:, 0].numpy()
    module = cw.build(cfg)
    got = np.asarray(jax.jit(lambda p, c: module.apply({"params": p}, c))(params,
                                                                           jnp.asarray(codes)))
    assert got.shape == want.shape == (2, cw.output_length(cfg, t))
    assert np.std(want) > 1e-3  # a non-trivial waveform
    err = float(np.max(np.abs(got - want)))
    print(f"MEASURED code2wav waveform {err:.1e}")
    assert err <= TOL, err  # measured 1.3e-08


def _random_params(cfg, rng):
    """numpy-drawn params of the right shapes (no init compilation): kernels ~ 1/sqrt(fan_in),
    norm scales ~ 1, small biases and SnakeBeta / LayerScale / gamma parameters."""
    shapes = jax.eval_shape(lambda: cw.init_params(cfg, jax.random.PRNGKey(0)))

    def draw(path, leaf):
        name = path[-1].key
        n = rng.normal(size=leaf.shape).astype(np.float32)
        if name == "kernel":
            return n / np.sqrt(np.prod(leaf.shape[:-1]))
        if name == "scale" and "norm" in str(path[-2]):
            return 1.0 + 0.1 * n
        return (1.0 if name == "embedding" else 0.1) * n

    return jax.tree_util.tree_map_with_path(draw, shapes)


def test_chunked_decode_equals_full_decode():
    # A Code2Wav with a short receptive field keeps the test fast; with chunk_size >= the
    # context, chunked_decode compiles only three window lengths.
    cfg = cw.tiny_config()
    cfg.num_layers, cfg.sliding_window, cfg.residual_dilations = 1, 4, (1, 3)
    ctx = cw.receptive_field(cfg)
    t, chunk = 3 * ctx + 5, ctx + 1
    params = _random_params(cfg, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    codes = jnp.asarray(rng.integers(0, cfg.codebook_size, size=(2, cfg.num_codebooks, t)),
                        jnp.int32)
    module = cw.build(cfg)
    full = np.asarray(jax.jit(lambda p, c: module.apply({"params": p}, c))(params, codes))
    chunked = np.asarray(cw.chunked_decode(module, params, codes, chunk_size=chunk,
                                           left_context=ctx))
    assert chunked.shape == full.shape == (2, cw.output_length(cfg, t))
    err = float(np.max(np.abs(chunked - full)))
    print(f"MEASURED chunked vs full decode {err:.1e}")
    assert err <= TOL, err  # measured 4.4e-06: float rounding only (windows differ)
    # The chunk shapes compiled by the first call serve every later call (no recompiles).
    compiled = cw._decode._cache_size()
    again = np.asarray(cw.chunked_decode(cw.build(cfg), params, codes, chunk_size=chunk,
                                         left_context=ctx))
    assert cw._decode._cache_size() == compiled
    np.testing.assert_array_equal(again, chunked)


def test_bad_codes_raise_before_compute(ref_model):
    cfg, params = ref_model["cfg"], ref_model["params"]
    module = cw.build(cfg)
    g, card = cfg.num_codebooks, cfg.codebook_size
    with pytest.raises(ValueError, match=f"num_codebooks={g}"):
        module.apply({"params": params}, jnp.zeros((1, g + 1, 5), jnp.int32))
    with pytest.raises(ValueError, match=rf"ids must be in \[0, codebook_size={card}\)"):
        module.apply({"params": params}, jnp.full((1, g, 5), card, jnp.int32))
    with pytest.raises(ValueError, match="integer"):
        module.apply({"params": params}, jnp.zeros((1, g, 5), jnp.float32))
    with pytest.raises(ValueError, match="chunk_size=0"):
        cw.chunked_decode(module, params, jnp.zeros((1, g, 5), jnp.int32), 0, 2)


def test_published_param_count_matches_transformers_meta_model():
    ref = pytest.importorskip("reference_qwen")
    pytest.importorskip("transformers")
    cfg = conv.code2wav_config_from_hf(ref.PUBLISHED_CONFIG)
    shapes = jax.eval_shape(lambda: cw.init_params(cfg, jax.random.PRNGKey(0)))
    ours = count_params(shapes)["total"]
    counts = ref.meta_counts(ref.hf_config(ref.PUBLISHED_CONFIG))
    assert ours == counts["code2wav"]
    assert round(ours / 1e6) == 216
