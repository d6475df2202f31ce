"""Codec family: config rules, shapes, and Mimi parity against the `moshi` package's MimiModel
on tiny random weights (fp32: codes identical, decoded audio within 1e-4), the Mimi importer,
causal prefix consistency, and the published Mimi parameter count (torch meta device)."""

from __future__ import annotations

import copy
import dataclasses
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from audiolm import config as config_lib
from audiolm.config import ConfigError, spec_to_section
from audiolm.importers import mimi as mimi_import
from audiolm.importers.mapping import CheckpointError
from audiolm.models import codec
from audiolm.nn.compile import fast_jit
from audiolm.presets import codec as presets

TOL = 1e-4  # max abs error of decoded audio against the fp32 reference


def _model(spec=presets.TINY_MIMI) -> ml_collections.ConfigDict:
    return spec_to_section(spec)


def _rules(model):
    codec.rules(ml_collections.ConfigDict({"model": model.to_dict()}))


def test_presets_validate_and_rates():
    for spec in presets.SPECS.values():
        _rules(_model(spec))
    assert set(presets.PRESETS) == {"tiny", "speech", "mimi", "tiny_mimi"}
    assert presets.frame_rate(presets.MIMI) == 12.5
    assert presets.hop_length(presets.MIMI) == 1920
    assert presets.bitrate(presets.MIMI, 8) == pytest.approx(1100.0)  # Kyutai's 1.1 kbps
    assert presets.frame_rate(presets.SPEECH_16K) == 25.0
    assert presets.bitrate(presets.SPEECH_16K) == 2000.0


@pytest.mark.parametrize("path, value, needle", [
    ("seanet.ratios", (4, 0), "model.seanet.ratios[1]=0"),
    ("seanet.compress", 3, "model.seanet.compress=3"),
    ("transformer.num_heads", 3, "model.transformer.num_heads=3"),
    ("quantizer.num_semantic", 4, "model.quantizer.num_semantic=4"),
    ("quantizer.codebook_size", 1, "model.quantizer.codebook_size=1"),
    ("downsample_stride", 0, "model.downsample_stride=0"),
])
def test_rules_name_the_field(path, value, needle):
    model = _model()
    section = model
    *parents, key = path.split(".")
    for p in parents:
        section = section[p]
    section[key] = value
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")
                       .replace("(", r"\(").replace(")", r"\)")):
        _rules(model)


def test_unknown_field_is_an_error():
    model = _model()
    model.seanet.kernel = 3
    with pytest.raises(ConfigError, match="model.seanet"):
        _rules(model)


def test_shapes_and_any_prefix_decodes():
    spec = presets.TINY_MIMI
    module = codec.build(spec)
    params = codec.init_params(spec, jax.random.PRNGKey(0))
    wav = jnp.asarray(np.random.default_rng(0).normal(0, 0.1, (2, 3000)), jnp.float32)
    codes = codec.encode(module, params, wav, fast_compile=True)
    assert codes.shape == (2, 4, 4) and codes.dtype == jnp.int32  # ceil(3000 / 960) frames
    for n in (1, 4):
        out = codec.decode(module, params, codes[:, :n], fast_compile=True)
        assert out.shape == (2, 4 * 960) and bool(jnp.all(jnp.isfinite(out)))
    with pytest.raises(ValueError, match="ids must be in"):
        codec.decode(module, params, codes + 64)
    with pytest.raises(ValueError, match="num_codebooks=5"):
        codec.encode(module, params, wav, 5)
    fwd = fast_jit(module.apply)({"params": params}, wav)
    assert fwd["audio"].shape == (2, 3000) and fwd["commit"].shape == (2, 4, 4)


# ---------------------------------------------------------------------------------------------
# Parity with moshi's MimiModel


def _torch():
    os.environ.setdefault("NO_TORCH_COMPILE", "1")
    torch = pytest.importorskip("torch")
    pytest.importorskip("moshi")
    torch.set_num_threads(1)
    return torch


def mimi_config(spec: presets.CodecSpec) -> dict:
    """moshi `loaders._mimi_config` with the sizes of `spec`."""
    from moshi.models import loaders

    cfg = copy.deepcopy(loaders._mimi_config)
    s, t, q = spec.seanet, spec.transformer, spec.quantizer
    cfg["sample_rate"] = spec.sample_rate
    cfg["frame_rate"] = presets.frame_rate(spec)
    cfg["seanet"].update(dimension=s.dimension, n_filters=s.n_filters, ratios=list(s.ratios),
                         n_residual_layers=s.n_residual_layers, kernel_size=s.kernel_size,
                         last_kernel_size=s.last_kernel_size,
                         residual_kernel_size=s.residual_kernel_size,
                         dilation_base=s.dilation_base, compress=s.compress)
    cfg["quantizer"].update(dimension=q.dimension, n_q=q.num_codebooks, bins=q.codebook_size,
                            input_dimension=s.dimension, output_dimension=s.dimension)
    cfg["transformer"].update(d_model=s.dimension, num_heads=t.num_heads,
                              num_layers=t.num_layers, context=t.context,
                              dim_feedforward=t.ffn_hidden, max_period=t.rope_theta,
                              layer_scale=t.layer_scale, input_dimension=s.dimension,
                              output_dimensions=[s.dimension])
    return cfg


def reference_mimi(spec: presets.CodecSpec, seed: int = 0):
    """A moshi MimiModel of `spec`'s sizes, every weight and codebook drawn at random (fp32)."""
    torch = _torch()
    from moshi.models import loaders

    model = loaders.get_mimi(None, mimi_config(spec), num_codebooks=spec.quantizer.num_codebooks)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            fan_in = max(p[0].numel(), 1) if p.ndim > 1 else 1
            scale = 1.0 / np.sqrt(fan_in) if p.ndim > 1 else 0.2
            p.copy_(torch.randn(p.shape, generator=gen) * scale
                    + (1.0 if name.endswith("norm1.weight") or name.endswith("norm2.weight")
                       else 0.0))
        for name, b in model.named_buffers():
            if name.endswith("cluster_usage"):
                b.copy_(torch.rand(b.shape, generator=gen) + 0.5)
        for name, b in model.named_buffers():
            if name.endswith("embedding_sum"):
                usage = dict(model.named_buffers())[name.replace("embedding_sum", "cluster_usage")]
                b.copy_(torch.randn(b.shape, generator=gen) * 0.5 * usage[:, None])
    model.eval()
    return model


@pytest.fixture(scope="module")
def tiny_pair():
    torch = _torch()
    spec = presets.TINY_MIMI
    ref = reference_mimi(spec)
    state = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    params = mimi_import.params_from_state(state.__getitem__, state.keys(), spec)
    wav = np.random.default_rng(1).normal(0, 0.3, (2, 18500)).astype(np.float32)
    with torch.no_grad():
        ref_codes = ref.encode(torch.from_numpy(wav)[:, None]).numpy()
        ref_audio = ref.decode(torch.from_numpy(ref_codes)).numpy()[:, 0]
    return spec, params, wav, ref_codes, ref_audio


def test_mimi_parity_codes_and_audio(tiny_pair):
    spec, params, wav, ref_codes, ref_audio = tiny_pair
    module = codec.build(spec)
    codes = np.asarray(codec.encode(module, params, wav, fast_compile=True))
    assert ref_codes.shape == codes.shape == (2, 4, 20)
    assert len(np.unique(ref_codes)) > 8  # the random weights use many entries
    np.testing.assert_array_equal(codes, ref_codes)
    audio = np.asarray(codec.decode(module, params, ref_codes, fast_compile=True))
    assert audio.shape == ref_audio.shape == (2, 20 * 960)
    assert np.abs(ref_audio).max() > 1e-2
    np.testing.assert_allclose(audio, ref_audio, atol=TOL, rtol=0)


def test_mimi_parity_fewer_codebooks(tiny_pair):
    """set_num_codebooks(n) in moshi == our encode(num_codebooks=n) and decode of the prefix."""
    torch = _torch()
    spec, params, wav, ref_codes, _ = tiny_pair
    ref = reference_mimi(spec)
    ref.set_num_codebooks(2)
    with torch.no_grad():
        ref2 = ref.encode(torch.from_numpy(wav)[:, None]).numpy()
        audio2 = ref.decode(torch.from_numpy(ref2)).numpy()[:, 0]
    module = codec.build(spec)
    codes2 = codec.encode(module, params, wav, 2, fast_compile=True)
    np.testing.assert_array_equal(np.asarray(codes2), ref2)
    np.testing.assert_array_equal(ref2, ref_codes[:, :2])
    out = codec.decode(module, params, ref2, fast_compile=True)
    np.testing.assert_allclose(np.asarray(out), audio2, atol=TOL, rtol=0)


def test_causal_prefix_consistency(tiny_pair):
    """A causal codec: the codes of the first k frames of audio are the first k frames of the
    codes of the whole, and the audio decoded from the first k frames is the first k * hop
    samples of the whole decode (what makes frame-by-frame streaming equal to offline)."""
    spec, params, wav, ref_codes, ref_audio = tiny_pair
    module = codec.build(spec)
    frames = 7
    part = codec.encode(module, params, wav[:, :frames * 960], fast_compile=True)
    np.testing.assert_array_equal(np.asarray(part), ref_codes[..., :frames])
    audio = codec.decode(module, params, ref_codes[..., :frames], fast_compile=True)
    np.testing.assert_allclose(np.asarray(audio), ref_audio[:, :frames * 960], atol=TOL, rtol=0)


def test_importer_errors_name_the_tensor(tiny_pair):
    spec, params, *_ = tiny_pair
    ref = reference_mimi(spec)
    state = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    missing = dict(state)
    del missing["decoder.model.14.conv.conv.weight"]
    with pytest.raises(CheckpointError, match="decoder.model.14.conv.conv.weight"):
        mimi_import.params_from_state(missing.__getitem__, missing.keys(), spec)
    extra = dict(state, **{"quantizer.extra": np.zeros(1, np.float32)})
    with pytest.raises(CheckpointError, match="quantizer.extra"):
        mimi_import.params_from_state(extra.__getitem__, extra.keys(), spec)
    # the imported tree has exactly our init's structure and shapes
    ours = jax.eval_shape(lambda r: codec.init_params(spec, r), jax.random.PRNGKey(0))
    assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(params)
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(params)):
        assert a.shape == b.shape


def test_load_pretrained_safetensors(tiny_pair, tmp_path, monkeypatch):
    """A safetensors file of a MimiModel loads through load_pretrained (tiny sizes patched in
    for the preset) and a prefix of its codebooks is kept."""
    save_file = pytest.importorskip("safetensors.numpy").save_file
    spec, params, wav, ref_codes, _ = tiny_pair
    ref = reference_mimi(spec)
    path = str(tmp_path / "mimi.safetensors")
    save_file({k: v.detach().numpy() for k, v in ref.state_dict().items()}, path)
    monkeypatch.setattr(presets, "MIMI", spec)
    model, loaded = mimi_import.load_pretrained(path, num_codebooks=3)
    assert model.quantizer.num_codebooks == 3 and model.family == "codec"
    codes = codec.encode(codec.build(model), loaded, wav, fast_compile=True)
    np.testing.assert_array_equal(np.asarray(codes), ref_codes[:, :3])


def test_published_mimi_parameter_count():
    """Our `mimi` preset has exactly the parameters of moshi's Mimi: its torch parameters plus
    the codebooks (moshi keeps them as EMA buffers embedding_sum / cluster_usage)."""
    torch = _torch()
    from moshi.models import loaders

    with torch.device("meta"):
        ref = loaders.get_mimi(None, mimi_config(presets.MIMI), num_codebooks=32, device="meta")
    theirs = sum(p.numel() for p in ref.parameters())
    theirs += sum(b.numel() for n, b in ref.named_buffers() if n.endswith("embedding_sum"))
    desc = codec.describe_params(presets.MIMI)
    ours = sum(v["total"] for v in desc.values())
    assert ours == theirs
    assert desc["quantizer"]["embedding"] == 32 * 2048 * 256


def test_nearest_euclidean_and_cosine_lookups():
    r = jnp.asarray([[1.0, 0.0], [0.0, -2.0]])
    book = jnp.asarray([[10.0, 0.5], [0.3, 0.3], [0.0, -50.0]])
    np.testing.assert_array_equal(np.asarray(codec.nearest(r, book)), [1, 1])
    np.testing.assert_array_equal(np.asarray(codec.nearest(r, book, normalized=True)), [0, 2])
    spec = dataclasses.replace(presets.TINY_MIMI, quantizer=dataclasses.replace(
        presets.TINY_MIMI.quantizer, normalized_lookup=True))
    with pytest.raises(CheckpointError, match="normalized_lookup=True"):
        mimi_import.params_from_state(lambda k: None, [], spec)
