"""Pattern LM generation (audiolm.sample.pattern_lm) against transformers' MusicGen `generate`.

A tiny random `MusicgenForCausalLM` is saved with `save_pretrained` and imported with
`audiolm.importers.load_pretrained`. Greedy decoding of 32 frames (36 steps of the delay
pattern) must be token-identical to `generate(do_sample=False)`: without guidance, with
classifier-free guidance (doubled batch, null condition = zero encoder states) and continuing a
prompt. The compiled `sample` (which cuts the padding of the encoder states) and the plain
`generate` (full padded states) both agree with it. Sampling with a fixed seed is reproducible
and reuses one compile.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from audiolm import importers  # noqa: E402
from audiolm.importers import musicgen  # noqa: E402
from audiolm.models import pattern_lm  # noqa: E402
from audiolm.nn.compile import fast_jit  # noqa: E402
from audiolm.sample import pattern_lm as sampler  # noqa: E402

K, V, D = 4, 32, 32
B, FRAMES, ENC = 2, 32, 5  # 32 frames = 36 decode steps of the delay pattern
MAX_POS = 64


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = transformers.MusicgenDecoderConfig(
        vocab_size=V, hidden_size=D, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
        num_codebooks=K, max_position_embeddings=MAX_POS, pad_token_id=V, bos_token_id=V,
        eos_token_id=None, decoder_start_token_id=V, activation_function="gelu", dropout=0.0)
    model = transformers.MusicgenForCausalLM(cfg).eval()
    model.config._attn_implementation = "eager"
    with torch.no_grad():  # larger weights: peaked, input-dependent logits (no near-ties)
        for name, p in model.named_parameters():
            p.mul_(3.0 if "embed_tokens" not in name and "layer_norm" not in name else 1.0)
            if "layer_norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    path = str(tmp_path_factory.mktemp("musicgen"))
    model.save_pretrained(path)
    model_config, params = importers.load_pretrained(path)
    module = pattern_lm.build(model_config)
    params = jax.tree_util.tree_map(jnp.asarray, params)
    rng = np.random.default_rng(0)
    ehs = rng.standard_normal((B, ENC, D)).astype(np.float32)
    ehs_mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
    length = model_config.conditioning.conditioners[musicgen.CROSS_ID].max_length
    conds = {f"cond.{musicgen.CROSS_ID}": np.pad(ehs, ((0, 0), (0, length - ENC), (0, 0))),
             f"cond.{musicgen.CROSS_ID}.mask": np.pad(ehs_mask, ((0, 0), (0, length - ENC)))}
    return dict(model=model, module=module, params=params, ehs=ehs, ehs_mask=ehs_mask,
                conds=conds)


def hf_generate(s, prompt=None, guidance=None):
    """transformers' greedy generate -> codes [B, K, FRAMES]."""
    bos = np.full((B, K, 1), V, np.int64)
    ids = bos if prompt is None else np.concatenate([bos, prompt.astype(np.int64)], axis=-1)
    ids = torch.from_numpy(ids.reshape(B * K, -1))
    ehs, mask = torch.from_numpy(s["ehs"]), torch.from_numpy(s["ehs_mask"].astype(np.int64))
    kwargs = {}
    if guidance:  # the doubled batch transformers' MusicGen builds: null = zero states, no keys
        ehs = torch.cat([ehs, torch.zeros_like(ehs)])
        mask = torch.cat([mask, torch.zeros_like(mask)])
        kwargs["guidance_scale"] = guidance
    # use_cache=False: decoder-only generate makes a self-attention-only cache into which
    # MusicGen's cross-attention appends the encoder keys (transformers 5.x); without a cache
    # every step re-runs the whole prefix, which is the same computation.
    with torch.no_grad():
        out = s["model"].generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                  max_length=FRAMES + K, num_return_sequences=1, encoder_hidden_states=ehs,
                                  encoder_attention_mask=mask, use_cache=False, **kwargs)
    return out.numpy().reshape(B, K, FRAMES)


def ours(s, **kwargs):
    """The compiled entry point `sampler.sample`."""
    return np.asarray(sampler.sample(s["module"], s["params"], s["conds"], frames=FRAMES,
                                     **kwargs))


def ours_greedy(s, prompt=None, cfg_scale=1.0):
    """`sampler.generate` under `fast_jit` (compile time dominates)."""
    fn = fast_jit(lambda p, c, pr: sampler.generate(
        s["module"], p, c, frames=FRAMES, rng=None, prompt=pr, temperature=0.0,
        cfg_scale=cfg_scale))
    return np.asarray(fn(s["params"], s["conds"], prompt))


def _report(name, a, b):
    same = float(np.mean(a == b))
    print(f"{name}: {a.size} codes, fraction equal to transformers = {same:.4f}")


def test_greedy_equals_transformers(setup):
    ref = hf_generate(setup)
    got = ours(setup, temperature=0.0)  # `sample`: cross conditions cut to 5 of 64 positions
    trimmed = sampler.trim_cross_conditions(setup["module"].spec, setup["conds"])
    assert trimmed[f"cond.{musicgen.CROSS_ID}"].shape == (B, ENC, D)
    np.testing.assert_array_equal(trimmed[f"cond.{musicgen.CROSS_ID}.mask"], setup["ehs_mask"])
    _report("greedy", got, ref)
    assert len(np.unique(ref)) > 8  # not a degenerate constant stream
    np.testing.assert_array_equal(got, ref)


def test_greedy_cfg_equals_transformers(setup):
    ref = hf_generate(setup, guidance=3.0)
    got = ours_greedy(setup, cfg_scale=3.0)
    _report("greedy cfg 3", got, ref)
    assert not np.array_equal(ref, hf_generate(setup))  # guidance changes the codes
    np.testing.assert_array_equal(got, ref)


def test_prompt_continuation_equals_transformers_and_keeps_prompt(setup):
    prompt = np.random.default_rng(3).integers(0, V, (B, K, 7)).astype(np.int32)
    ref = hf_generate(setup, prompt=prompt)
    got = ours_greedy(setup, prompt=prompt)
    _report("greedy prompt 7", got, ref)
    np.testing.assert_array_equal(got[:, :, :7], prompt)
    np.testing.assert_array_equal(got, ref)


def test_sampling_fixed_seed_reproducible(setup):
    prompt = np.random.default_rng(4).integers(0, V, (B, K, 7)).astype(np.int32)
    kw = dict(temperature=1.0, top_k=8, top_p=0.95, cfg_scale=2.0, prompt=prompt)
    a = ours(setup, rng=jax.random.PRNGKey(5), **kw)
    compiled = sampler._sample._cache_size()
    b = ours(setup, rng=jax.random.PRNGKey(5), **kw)
    c = ours(setup, rng=jax.random.PRNGKey(6), **kw)
    hot = ours(setup, rng=jax.random.PRNGKey(5), **dict(kw, temperature=3.0))
    assert sampler._sample._cache_size() == compiled  # seeds and temperatures reuse one compile
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, hot)
    assert a.shape == (B, K, FRAMES) and a.min() >= 0 and a.max() < V
    np.testing.assert_array_equal(a[:, :, :7], prompt)


def test_bad_prompt_and_frames(setup):
    with pytest.raises(ValueError, match="prompt shape"):
        ours(setup, temperature=0.0, prompt=np.zeros((B, K, FRAMES), np.int32))
    with pytest.raises(ValueError, match="frames=0"):
        sampler.generate(setup["module"], setup["params"], setup["conds"], frames=0, rng=None)
    with pytest.raises(ValueError, match="rng is required"):
        sampler.generate(setup["module"], setup["params"], setup["conds"], frames=4, rng=None,
                         temperature=1.0)
