"""Causal convs, ConvNeXt, SnakeBeta, LayerScale vs numpy and the torch references
(transformers Qwen3-Omni Code2Wav blocks, moshi StreamingConv1d / StreamingConvTranspose1d)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from audiolm import nn as ann

from tests.nn.helpers import rand_params, run

TOL = dict(rtol=1e-5, atol=1e-5)  # fp32


def _x(shape, seed=1):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _np_causal_conv(x, kernel, bias, stride, dilation, groups):
    """Direct loops: out[t] = sum_j xpad[t*stride + j*dilation] @ kernel[j] per group."""
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    b, t, cin = x.shape
    k, cin_g, cout = kernel.shape
    left, right = ann.conv.causal_padding(t, k, stride, dilation)
    xp = np.pad(x, ((0, 0), (left, right), (0, 0)))
    t_out = (xp.shape[1] - (k - 1) * dilation - 1) // stride + 1
    cout_g = cout // groups
    y = np.zeros((b, t_out, cout))
    for to in range(t_out):
        for j in range(k):
            xs = xp[:, to * stride + j * dilation]
            for g in range(groups):
                y[:, to, g * cout_g:(g + 1) * cout_g] += \
                    xs[:, g * cin_g:(g + 1) * cin_g] @ kernel[j, :, g * cout_g:(g + 1) * cout_g]
    return y + np.asarray(bias)


@pytest.mark.parametrize("k,stride,dilation,groups,t", [
    (3, 1, 1, 1, 9), (7, 1, 3, 1, 10), (4, 2, 1, 1, 9), (4, 2, 1, 1, 10), (5, 3, 1, 2, 11),
    (7, 1, 1, 4, 8), (1, 1, 1, 1, 5), (3, 1, 9, 2, 13), (2, 1, 4, 1, 3), (7, 1, 2, 1, 1)])
def test_causal_conv_matches_numpy_and_is_causal(k, stride, dilation, groups, t):
    x = _x((2, t, 4))
    m = ann.CausalConv1d(8, k, stride=stride, dilation=dilation, groups=groups)
    p = rand_params(m, x)
    assert p["conv"]["kernel"].shape == (k, 4 // groups, 8) and p["conv"]["bias"].shape == (8,)
    y = run(m, p, x)
    assert y.shape == (2, -(-t // stride), 8)
    ref = _np_causal_conv(x, p["conv"]["kernel"], p["conv"]["bias"], stride, dilation, groups)
    np.testing.assert_allclose(y, ref, **TOL)
    # Causality: changing inputs from frame s on leaves outputs before s / stride unchanged.
    s = t // 2
    y2 = run(m, p, x.at[:, s:].set(7.0))
    n_same = s // stride
    np.testing.assert_allclose(y2[:, :n_same], y[:, :n_same], **TOL)
    assert not np.allclose(y2[:, n_same:], y[:, n_same:])


@pytest.mark.parametrize("k,stride,trim_left,groups", [(4, 2, 0, 1), (2, 2, 0, 1), (10, 5, 5, 1),
                                                        (4, 2, 0, 4), (3, 1, 0, 2), (5, 2, 0, 1),
                                                        (7, 3, 1, 2), (16, 8, 0, 1)])
def test_conv_transpose_matches_numpy(k, stride, trim_left, groups):
    t, cin, cout = 5, 4, 8
    x = _x((2, t, cin))
    m = ann.CausalConvTranspose1d(cout, k, stride, trim_left=trim_left, groups=groups)
    p = rand_params(m, x)
    kernel = np.asarray(p["conv"]["kernel"], np.float64)
    assert kernel.shape == (k, cin // groups, cout)
    y = run(m, p, x)
    full = np.zeros((2, (t - 1) * stride + k, cout))
    cin_g, cout_g = cin // groups, cout // groups
    xn = np.asarray(x, np.float64)
    for ti in range(t):
        for j in range(k):
            for g in range(groups):
                full[:, ti * stride + j, g * cout_g:(g + 1) * cout_g] += \
                    xn[:, ti, g * cin_g:(g + 1) * cin_g] @ kernel[j, :, g * cout_g:(g + 1) * cout_g]
    full += np.asarray(p["conv"]["bias"])
    ref = full[:, trim_left: full.shape[1] - (k - stride)]
    assert y.shape == ref.shape and y.shape[1] == t * stride - trim_left
    np.testing.assert_allclose(y, ref, **TOL)


def test_snakebeta_layerscale_numpy():
    x = _x((2, 5, 3)) * 3
    m = ann.SnakeBeta(3)
    p0 = ann.init_params(m, jax.random.PRNGKey(0), x)
    np.testing.assert_array_equal(p0["alpha"], 0.0)
    np.testing.assert_array_equal(p0["beta"], 0.0)
    p = rand_params(m, x)
    a, b = np.exp(np.asarray(p["alpha"], np.float64)), np.exp(np.asarray(p["beta"], np.float64))
    xn = np.asarray(x, np.float64)
    np.testing.assert_allclose(run(m, p, x), xn + np.sin(xn * a) ** 2 / (b + 1e-9), **TOL)
    ls = ann.LayerScale(0.01)
    p = ann.init_params(ls, jax.random.PRNGKey(0), x)
    np.testing.assert_allclose(p["scale"], np.full(3, 0.01, np.float32))
    np.testing.assert_allclose(run(ls, p, x), 0.01 * xn, **TOL)


def test_convnext_block_numpy():
    x = _x((2, 9, 4))
    m = ann.ConvNeXtBlock(4, kernel_size=3, mlp_ratio=2, layer_scale_init=0.5)
    p0 = ann.init_params(m, jax.random.PRNGKey(0), x)
    np.testing.assert_allclose(p0["gamma"], 0.5)
    p = rand_params(m, x)
    pn = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), p)
    h = _np_causal_conv(x, pn["dwconv"]["conv"]["kernel"], pn["dwconv"]["conv"]["bias"], 1, 1, 4)
    mu, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
    h = (h - mu) / np.sqrt(var + 1e-6) * pn["norm"]["scale"] + pn["norm"]["bias"]
    h = h @ pn["pwconv1"]["kernel"] + pn["pwconv1"]["bias"]
    h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
    h = h @ pn["pwconv2"]["kernel"] + pn["pwconv2"]["bias"]
    np.testing.assert_allclose(run(m, p, x), np.asarray(x) + pn["gamma"] * h, **TOL)


# --- torch references ----------------------------------------------------------------------


def _torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


def _conv_params(conv, transpose=False, groups=1):
    """Our {"conv": {kernel, bias}} from a torch Conv1d / ConvTranspose1d."""
    w = conv.weight.detach().numpy()
    if transpose:  # torch [C_in, C_out/g, k] -> ours [k, C_in/g, C_out]
        cin, cout_g, k = w.shape
        cin_g = cin // groups
        kern = w.reshape(groups, cin_g, cout_g, k).transpose(3, 1, 0, 2).reshape(
            k, cin_g, groups * cout_g)
    else:  # torch [C_out, C_in/g, k] -> ours [k, C_in/g, C_out]
        kern = w.transpose(2, 1, 0)
    return {"conv": {"kernel": jnp.asarray(kern), "bias": jnp.asarray(conv.bias.detach().numpy())}}


def _to_torch(x):
    import torch
    return torch.from_numpy(np.array(x)).transpose(1, 2).contiguous()


def _from_torch(y):
    return y.detach().transpose(1, 2).numpy()


@pytest.mark.parametrize("k,stride,dilation,groups,t", [(7, 1, 3, 1, 10), (4, 2, 1, 1, 9),
                                                        (7, 1, 1, 4, 8)])
def test_causal_conv_matches_qwen3_omni(k, stride, dilation, groups, t):
    torch = _torch()
    pytest.importorskip("transformers")
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
        Qwen3OmniMoeCausalConvNet)
    torch.manual_seed(0)
    ref = Qwen3OmniMoeCausalConvNet(4, 8, k, dilation=dilation, stride=stride, groups=groups)
    x = _x((2, t, 4))
    y = run(ann.CausalConv1d(8, k, stride=stride, dilation=dilation, groups=groups),
            _conv_params(ref.conv), x)
    with torch.no_grad():
        np.testing.assert_allclose(y, _from_torch(ref(_to_torch(x))), **TOL)


def test_conv_transpose_and_blocks_match_qwen3_omni():
    torch = _torch()
    pytest.importorskip("transformers")
    from transformers.models.qwen3_omni_moe import modeling_qwen3_omni_moe as hf
    torch.manual_seed(0)
    x = _x((2, 6, 4))
    for k, s in ((2, 2), (10, 5)):
        ref = hf.Qwen3OmniMoeCausalTransConvNet(4, 8, k, s)
        m = ann.CausalConvTranspose1d(8, k, s, trim_left=k - s)
        with torch.no_grad():
            np.testing.assert_allclose(run(m, _conv_params(ref.conv, True), x),
                                       _from_torch(ref(_to_torch(x))), **TOL)
    block = hf.Qwen3OmniMoeConvNeXtBlock(4)
    with torch.no_grad():
        block.gamma.copy_(torch.randn(4))
        for mod in (block.norm,):
            mod.weight.copy_(torch.randn(4))
            mod.bias.copy_(torch.randn(4))
    p = {"dwconv": _conv_params(block.dwconv.conv),
         "norm": {"scale": jnp.asarray(block.norm.weight.detach().numpy()),
                  "bias": jnp.asarray(block.norm.bias.detach().numpy())},
         "pwconv1": {"kernel": jnp.asarray(block.pwconv1.weight.detach().numpy().T),
                     "bias": jnp.asarray(block.pwconv1.bias.detach().numpy())},
         "pwconv2": {"kernel": jnp.asarray(block.pwconv2.weight.detach().numpy().T),
                     "bias": jnp.asarray(block.pwconv2.bias.detach().numpy())},
         "gamma": jnp.asarray(block.gamma.detach().numpy())}
    with torch.no_grad():
        np.testing.assert_allclose(run(ann.ConvNeXtBlock(4), p, x),
                                   _from_torch(block(_to_torch(x))), **TOL)
    snake = hf.Qwen3OmniMoeSnakeBeta(4)
    with torch.no_grad():
        snake.alpha.copy_(torch.randn(4) * 0.5)
        snake.beta.copy_(torch.randn(4) * 0.5)
        p = {"alpha": jnp.asarray(snake.alpha.numpy()), "beta": jnp.asarray(snake.beta.numpy())}
        np.testing.assert_allclose(run(ann.SnakeBeta(4), p, x * 3),
                                   _from_torch(snake(_to_torch(x * 3))), **TOL)


def test_convs_match_moshi_streaming_modules():
    torch = _torch()
    os.environ.setdefault("NO_TORCH_COMPILE", "1")
    conv_mod = pytest.importorskip("moshi.modules.conv")
    torch.manual_seed(0)
    x = _x((2, 8, 4))
    for k, s, d in ((7, 1, 1), (4, 2, 1), (3, 1, 2)):
        ref = conv_mod.StreamingConv1d(4, 6, k, stride=s, dilation=d, causal=True)
        m = ann.CausalConv1d(6, k, stride=s, dilation=d)
        with torch.no_grad():
            np.testing.assert_allclose(run(m, _conv_params(ref.conv.conv), x),
                                       _from_torch(ref(_to_torch(x))), **TOL)
    for k, s, g in ((4, 2, 1), (4, 2, 4)):
        cout = 4 if g > 1 else 6
        ref = conv_mod.StreamingConvTranspose1d(4, cout, k, s, groups=g, causal=True)
        m = ann.CausalConvTranspose1d(cout, k, s, groups=g)
        with torch.no_grad():
            np.testing.assert_allclose(run(m, _conv_params(ref.convtr.convtr, True, g), x),
                                       _from_torch(ref(_to_torch(x))), **TOL)


def test_fast_sin_matches_sin_and_its_gradient_is_cos():
    from audiolm.nn.conv import fast_sin
    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(-50, 50, 20001), rng.normal(size=5000) * 1000,
                        [0.0, np.pi / 2, -np.pi / 2, np.pi, 2 * np.pi]]).astype(np.float32)
    x64 = x.astype(np.float64)
    y = np.asarray(jax.jit(fast_sin)(jnp.asarray(x)), np.float64)
    assert np.abs(y - np.sin(x64)).max() < 5e-7  # measured 2.1e-7
    g = np.asarray(jax.jit(jax.vmap(jax.grad(fast_sin)))(jnp.asarray(x[:20001])), np.float64)
    assert np.abs(g - np.cos(x64[:20001])).max() < 1e-5
