"""T5 text conditioner: our JAX T5 encoder vs transformers' T5EncoderModel (tiny random, saved
with save_pretrained + a ByT5 tokenizer, which needs no vocabulary file).

Tolerance: last hidden state max |diff| <= 1e-4 (fp32).
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from audiolm.models import conditioners as cond_lib  # noqa: E402
from audiolm.models import pattern_lm  # noqa: E402
from audiolm.presets import pattern_lm as presets  # noqa: E402

TEXTS = ["ambient drones with a slow pulse", "rock", "jazz trio, brushed drums & upright bass"]
MAX_LEN = 24


def _save_t5(path, proj):
    torch.manual_seed(0)
    cfg = transformers.T5Config(vocab_size=384, d_model=16, d_kv=4, num_heads=4, d_ff=32,
                                num_layers=2, relative_attention_num_buckets=8,
                                relative_attention_max_distance=20, feed_forward_proj=proj,
                                dropout_rate=0.0)
    model = transformers.T5EncoderModel(cfg).eval()
    with torch.no_grad():  # non-trivial norm weights
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    model.save_pretrained(path)
    transformers.ByT5Tokenizer().save_pretrained(path)
    return model


@pytest.fixture(scope="module", params=["relu", "gated-gelu"])
def t5(request, tmp_path_factory):
    torch.set_num_threads(1)
    path = str(tmp_path_factory.mktemp(f"t5_{request.param}"))
    return _save_t5(path, request.param), path


def test_t5_encoder_parity(t5):
    model, path = t5
    enc = cond_lib.T5TextEncoder(path)
    emb, mask = enc(TEXTS, MAX_LEN)
    tok = transformers.ByT5Tokenizer()(TEXTS, padding="max_length", truncation=True,
                                       max_length=MAX_LEN, return_tensors="pt")
    with torch.no_grad():
        ref = model(input_ids=tok["input_ids"],
                    attention_mask=tok["attention_mask"]).last_hidden_state.numpy()
    np.testing.assert_array_equal(mask, tok["attention_mask"].numpy().astype(bool))
    assert mask.sum(1).tolist() == [MAX_LEN, 5, MAX_LEN]  # truncated / padded rows
    err = np.abs(emb - ref * mask[..., None]).max()
    print(f"T5 ({model.config.feed_forward_proj}) last hidden state max|diff| = {err:.2e}")
    assert err <= 1e-4


def test_t5_relative_buckets_match_transformers():
    from transformers.models.t5.modeling_t5 import T5Attention

    rel = torch.arange(40)[None, :] - torch.arange(40)[:, None]
    ref = T5Attention._relative_position_bucket(rel, bidirectional=True, num_buckets=32,
                                                max_distance=128).numpy()
    np.testing.assert_array_equal(cond_lib.t5_relative_buckets(40, 32, 128), ref)


@pytest.mark.parametrize("t5", ["relu"], indirect=True)
def test_t5_conditioner_in_model(t5):
    _, path = t5
    model_config = presets.model(
        max_frames=6,
        pretransform=presets.MuLawRVQSpec(n_q=2, codebook_size=8, sample_rate=800,
                                          frame_rate=50.0),
        lm=presets.TransformerSpec(hidden_size=16, num_layers=1, num_heads=2, ffn_hidden=32),
        conditioning=presets.ConditioningSpec(
            16, {"description": presets.T5ConditionerSpec(path=path, dim=16, max_length=MAX_LEN,
                                                          project=True)},
            cross_attention_ids=("description",), project_cross_attention=False),
        pattern=presets.PatternSpec("delay"))
    pattern_lm.rules(ml_collections.ConfigDict({"model": model_config}))
    module = pattern_lm.build(model_config)
    spec = module.spec
    conds = cond_lib.prepare(spec.conditioning.conditioners, {"description": TEXTS[:2]})
    assert conds["cond.description"].shape == (2, MAX_LEN, 16)
    shapes = jax.eval_shape(lambda r: pattern_lm.init_params(model_config, r),
                            jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.normal(0, 0.3, s.shape).astype(np.float32)), shapes)
    assert set(params["conditioner_set"]) == {"cond_description"}  # only the projection
    apply = jax.jit(lambda c: module.apply({"params": params}, jnp.full((2, 2, 7), 8), c))
    a = np.asarray(apply(conds))
    b = np.asarray(apply(cond_lib.prepare(spec.conditioning.conditioners,
                                          {"description": TEXTS[1:]})))
    assert np.all(np.abs(a - b).max(axis=(1, 2, 3)) > 1e-4)
