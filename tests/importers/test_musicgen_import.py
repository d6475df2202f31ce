"""MusicGen decoder import: parity with transformers' MusicgenForCausalLM (tiny random, fp32).

Tolerance: logits max |diff| <= 1e-4 (fp32, highest matmul precision, eager attention).
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from audiolm import patterns  # noqa: E402
from audiolm.importers import mapping, musicgen  # noqa: E402
from audiolm.models import pattern_lm  # noqa: E402

K, V, D = 4, 32, 32
B, T = 2, 6


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = transformers.MusicgenDecoderConfig(
        vocab_size=V, hidden_size=D, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
        num_codebooks=K, max_position_embeddings=48, pad_token_id=V, bos_token_id=V,
        activation_function="gelu", dropout=0.0)
    model = transformers.MusicgenForCausalLM(cfg).eval()
    model.config._attn_implementation = "eager"
    # Biases of LayerNorms are zero at init: draw them so the mapping is exercised.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    path = str(tmp_path_factory.mktemp("musicgen"))
    model.save_pretrained(path)
    return model, path


@pytest.fixture(scope="module")
def imported(reference):
    return musicgen.load_pretrained(reference[1])


def test_config_and_every_tensor(reference, imported):
    model, path = reference
    cfg, params = imported
    assert cfg.pretransform.n_q == K and cfg.pretransform.codebook_size == V
    assert cfg.pattern.kind == "delay" and list(cfg.pattern.kwargs.delays) == [0, 1, 2, 3]
    n_ref = sum(p.numel() for p in model.parameters())
    n_ours = sum(x.size for x in jax.tree_util.tree_leaves(params))
    assert n_ours == n_ref
    import ml_collections
    full = ml_collections.ConfigDict({"model": cfg})
    pattern_lm.rules(full)


def test_delay_pattern_equals_build_delay_pattern_mask(reference):
    model, _ = reference
    rng = np.random.default_rng(0)
    codes = rng.integers(0, V, (B, K, T))
    bos = np.full((B, K, 1), V)
    _, mask = model.build_delay_pattern_mask(
        torch.from_numpy(np.concatenate([bos, codes], -1).reshape(B * K, T + 1)),
        pad_token_id=V, max_length=T + K)
    pattern = patterns.make("delay", K, T)
    ours, _ = patterns.build(pattern, jnp.asarray(codes), V)
    np.testing.assert_array_equal(np.asarray(ours), mask.numpy().reshape(B, K, T + K))


def _forward(imported, seq, ehs, ehs_mask):
    cfg, params = imported
    module = pattern_lm.build(cfg)
    length = cfg.conditioning.conditioners[musicgen.CROSS_ID].max_length
    pad = length - ehs.shape[1]
    conds = {f"cond.{musicgen.CROSS_ID}": jnp.pad(jnp.asarray(ehs), ((0, 0), (0, pad), (0, 0))),
             f"cond.{musicgen.CROSS_ID}.mask": jnp.pad(jnp.asarray(ehs_mask), ((0, 0), (0, pad)))}
    return np.asarray(module.apply({"params": params}, jnp.asarray(seq), conds))


def test_logits_parity(reference, imported):
    model, _ = reference
    rng = np.random.default_rng(1)
    codes = rng.integers(0, V, (B, K, T))
    seq, _ = patterns.build(patterns.make("delay", K, T), jnp.asarray(codes), V)
    seq = np.array(seq)  # writable copy for torch.from_numpy
    s = seq.shape[-1]
    ehs = rng.standard_normal((B, 5, D)).astype(np.float32)
    ehs_mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
    with torch.no_grad():
        ref = model(input_ids=torch.from_numpy(seq.reshape(B * K, s)),
                    encoder_hidden_states=torch.from_numpy(ehs),
                    encoder_attention_mask=torch.from_numpy(ehs_mask.astype(np.int64))).logits
        ref_nocond = model(input_ids=torch.from_numpy(seq.reshape(B * K, s))).logits
    ref = ref.numpy().reshape(B, K, s, V)
    ours = _forward(imported, seq, ehs, ehs_mask)
    err = np.abs(ours - ref).max()
    print(f"musicgen logits max|diff| (cross-attention) = {err:.2e}")
    assert err <= 1e-4
    # No visible condition token: the cross-attention branch is exactly zero, as when
    # transformers skips it (encoder_hidden_states=None).
    ours0 = _forward(imported, seq, ehs, np.zeros_like(ehs_mask))
    err0 = np.abs(ours0 - ref_nocond.numpy().reshape(B, K, s, V)).max()
    print(f"musicgen logits max|diff| (no condition) = {err0:.2e}")
    assert err0 <= 1e-4


def test_rejects_full_musicgen_and_leftovers(tmp_path, reference):
    _, path = reference
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    cfg["model_type"] = "musicgen"
    with pytest.raises(ValueError, match="decoder"):
        musicgen.model_config_from_hf(cfg)
    store = mapping.TensorStore(path)
    tensors = {k: store[k] for k in store}
    tensors["model.decoder.extra.weight"] = np.zeros((2,), np.float32)
    model_cfg = musicgen.model_config_from_hf(json.load(open(os.path.join(path, "config.json"))))
    with pytest.raises(mapping.CheckpointError,
                       match=r"musicgen: 1 checkpoint tensors are not used by the config's "
                             r"layout: model\.decoder\.extra\.weight"):
        musicgen.convert(tensors, model_cfg)
    del tensors["model.decoder.extra.weight"], tensors["lm_heads.1.weight"]
    with pytest.raises(mapping.CheckpointError, match=r"missing tensor musicgen\.lm_heads\.1"):
        musicgen.convert(tensors, model_cfg)
