"""Kyutai's Mimi (python `moshi` `MimiModel` state dict / safetensors) -> codec family params.

`params_from_state(get_tensor, keys, spec)` maps a MimiModel state dict onto the params of
`audiolm.models.codec.Codec(spec)`; `load_pretrained(path, num_codebooks=32)` reads a Kyutai
Mimi safetensors file (e.g. `tokenizer-e351c8d8-checkpoint125.safetensors`) with the `MIMI`
preset's layout and returns `(model ConfigDict, params)`.

Their names -> ours (indices i of the `model` Sequential follow SEANet's layout: conv, then per
stage n_residual_layers blocks, ELU, conv / transposed conv; ELU, last conv):
  encoder.model.{i}.conv.conv.{weight,bias}          encoder/conv_in | down_s | conv_out
  encoder.model.{i}.block.{1,3}.conv.conv.*          encoder/res_{s}_{j}/conv{1,2}
  decoder.model.{i}.convtr.convtr.*                  decoder/up_{s}
  {encoder,decoder}_transformer.transformer.layers.{l}.self_attn.in_projs.0.weight
      (or in_proj_weight) [3D, D] -> attn/{q,k,v}_proj [D, H, D/H]; out_projs.0 -> attn/o_proj
  ...norm1 / norm2 -> attn_norm / ffn_norm; linear1 / linear2 -> ffn/fc1 / fc2;
  ...layer_scale_1 / layer_scale_2 -> attn_scale / ffn_scale
  downsample.conv.conv.conv.weight [D, D, 2s]         downsample/conv/kernel [2s, D, D]
  upsample.convtr.convtr.convtr.weight [D, 1, 2s]     upsample/conv/kernel [2s, 1, D]
  quantizer.rvq_{first,rest}.{input,output}_proj.weight [out, in, 1] -> {semantic,acoustic}/
      input_proj [D, d], output_proj [d, D]
  quantizer.rvq_*.vq.layers.{l}._codebook.{embedding_sum, cluster_usage, _initialized}
      -> quantizer codebook_update "ema" (Mimi's): the buffers embedding_sum[l],
      cluster_usage[l] and initialized (1 when every level's flag is set or absent, so k-means
      never reruns); codebook_update "loss": codebooks[l] = embedding_sum /
      max(cluster_usage, 1e-5) (Mimi's codebook)
Conv weights [out, in, k] become kernels [k, in, out]; transposed conv weights [in, out, k]
become [k, in, out] (the depthwise upsampler's [D, 1, k] becomes [k, 1, D]).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np

from audiolm.config import spec_to_section
from audiolm.importers.mapping import CheckpointError, Reader, TensorStore
from audiolm.models.codec import CODEBOOK_EPS
from audiolm.presets import codec as presets
from audiolm.presets.codec import CodecSpec



def _conv(r: Reader, name: str, c_in: int, c_out: int, k: int, bias: bool = True) -> dict:
    out = {"kernel": r(f"{name}.weight", (c_out, c_in, k)).transpose(2, 1, 0).copy()}
    if bias:
        out["bias"] = r.vector(f"{name}.bias", c_out)
    return {"conv": out}


def _conv_tr(r: Reader, name: str, c_in: int, c_out: int, k: int) -> dict:
    return {"conv": {"kernel": r(f"{name}.weight", (c_in, c_out, k)).transpose(2, 0, 1).copy(),
                     "bias": r.vector(f"{name}.bias", c_out)}}


def _res(r: Reader, prefix: str, ch: int, spec: CodecSpec) -> dict:
    s = spec.seanet
    hidden = ch // s.compress
    return {"conv1": _conv(r, f"{prefix}.block.1.conv.conv", ch, hidden, s.residual_kernel_size),
            "conv2": _conv(r, f"{prefix}.block.3.conv.conv", hidden, ch, 1)}


def _encoder(r: Reader, spec: CodecSpec) -> dict:
    s = spec.seanet
    out = {"conv_in": _conv(r, "encoder.model.0.conv.conv", 1, s.n_filters, s.kernel_size)}
    idx, ch = 1, s.n_filters
    for i, ratio in enumerate(reversed(s.ratios)):
        for j in range(s.n_residual_layers):
            out[f"res_{i}_{j}"] = _res(r, f"encoder.model.{idx + j}", ch, spec)
        idx += s.n_residual_layers + 1  # the ELU
        out[f"down_{i}"] = _conv(r, f"encoder.model.{idx}.conv.conv", ch, 2 * ch, 2 * ratio)
        idx += 1
        ch *= 2
    out["conv_out"] = _conv(r, f"encoder.model.{idx + 1}.conv.conv", ch, s.dimension,
                            s.last_kernel_size)
    return out


def _decoder(r: Reader, spec: CodecSpec) -> dict:
    s = spec.seanet
    ch = s.n_filters * 2 ** len(s.ratios)
    out = {"conv_in": _conv(r, "decoder.model.0.conv.conv", s.dimension, ch, s.kernel_size)}
    idx = 1
    for i, ratio in enumerate(s.ratios):
        out[f"up_{i}"] = _conv_tr(r, f"decoder.model.{idx + 1}.convtr.convtr", ch, ch // 2,
                                  2 * ratio)
        ch //= 2
        idx += 2
        for j in range(s.n_residual_layers):
            out[f"res_{i}_{j}"] = _res(r, f"decoder.model.{idx + j}", ch, spec)
        idx += s.n_residual_layers
    out["conv_out"] = _conv(r, f"decoder.model.{idx + 1}.conv.conv", ch, 1, s.last_kernel_size)
    return out


def _transformer(r: Reader, side: str, spec: CodecSpec) -> dict:
    t, d = spec.transformer, spec.seanet.dimension
    h = t.num_heads
    dh = d // h
    out = {}
    for layer in range(t.num_layers):
        p = f"{side}_transformer.transformer.layers.{layer}"
        name = f"{p}.self_attn.in_projs.0.weight"
        w_in = r(name if r.has(name) else f"{p}.self_attn.in_proj_weight", (3 * d, d))
        heads = lambda w: w.reshape(h, dh, d).transpose(2, 0, 1).copy()  # [D, H, dh]
        name = f"{p}.self_attn.out_projs.0.weight"
        w_out = r(name if r.has(name) else f"{p}.self_attn.out_proj.weight", (d, d))
        block = {
            "attn_norm": {"scale": r.vector(f"{p}.norm1.weight", d),
                          "bias": r.vector(f"{p}.norm1.bias", d)},
            "ffn_norm": {"scale": r.vector(f"{p}.norm2.weight", d),
                         "bias": r.vector(f"{p}.norm2.bias", d)},
            "attn": {"q_proj": {"kernel": heads(w_in[:d])},
                     "k_proj": {"kernel": heads(w_in[d:2 * d])},
                     "v_proj": {"kernel": heads(w_in[2 * d:])},
                     "o_proj": {"kernel": w_out.T.reshape(h, dh, d).copy()}},
            "ffn": {"fc1": {"kernel": r(f"{p}.linear1.weight", (t.ffn_hidden, d)).T.copy()},
                    "fc2": {"kernel": r(f"{p}.linear2.weight", (d, t.ffn_hidden)).T.copy()}},
        }
        if t.layer_scale:
            block["attn_scale"] = {"scale": r.vector(f"{p}.layer_scale_1.scale", d)}
            block["ffn_scale"] = {"scale": r.vector(f"{p}.layer_scale_2.scale", d)}
        out[f"layers_{layer}"] = block
    return out


def _rvq(r: Reader, prefix: str, levels: int, spec: CodecSpec) -> dict:
    q, d = spec.quantizer, spec.seanet.dimension
    sums, usages, flags = [], [], []
    for level in range(levels):
        p = f"{prefix}.vq.layers.{level}._codebook"
        sums.append(r(f"{p}.embedding_sum", (q.codebook_size, q.dimension)))
        usages.append(r.vector(f"{p}.cluster_usage", q.codebook_size))
        if r.has(f"{p}._initialized"):
            flags.append(float(np.asarray(r(f"{p}._initialized")).reshape(-1)[0]))
    out = {"input_proj": r(f"{prefix}.input_proj.weight", (q.dimension, d, 1))[:, :, 0].T.copy(),
           "output_proj": r(f"{prefix}.output_proj.weight", (d, q.dimension, 1))[:, :, 0].T.copy()}
    total, usage = np.stack(sums).astype(np.float32), np.stack(usages).astype(np.float32)
    if q.codebook_update == "ema":
        out.update(embedding_sum=total, cluster_usage=usage,
                   initialized=np.float32(min(flags, default=1.0) > 0))
    else:
        out["codebooks"] = total / np.maximum(usage, CODEBOOK_EPS)[..., None]
    return out


def params_from_state(get_tensor: Callable[[str], np.ndarray], keys: Iterable[str],
                      spec: CodecSpec) -> dict[str, Any]:
    """Our Codec params from a MimiModel state dict (`get_tensor(name)` -> array, `keys` every
    name). The layout must be Mimi's: split quantizer (num_semantic 1). Tensors missing, of the
    wrong shape, or left unused raise CheckpointError naming them."""
    if spec.quantizer.normalized_lookup:
        raise CheckpointError("Mimi's codebooks use a Euclidean lookup; the spec has "
                              "quantizer.normalized_lookup=True")
    if spec.quantizer.num_semantic != 1:
        raise CheckpointError(f"Mimi checkpoints have one semantic codebook; the spec has "
                              f"quantizer.num_semantic={spec.quantizer.num_semantic}")
    r = Reader(get_tensor, keys, part="mimi")
    d = spec.seanet.dimension
    params: dict[str, Any] = {"encoder": _encoder(r, spec), "decoder": _decoder(r, spec)}
    if spec.transformer.num_layers:
        params["encoder_transformer"] = _transformer(r, "encoder", spec)
        params["decoder_transformer"] = _transformer(r, "decoder", spec)
    s = spec.downsample_stride
    if s > 1:
        params["downsample"] = {"conv": {"kernel": r("downsample.conv.conv.conv.weight",
                                                     (d, d, 2 * s)).transpose(2, 1, 0).copy()}}
        params["upsample"] = {"conv": {"kernel": r("upsample.convtr.convtr.convtr.weight",
                                                   (d, 1, 2 * s)).transpose(2, 1, 0).copy()}}
    n = spec.quantizer.num_codebooks
    params["quantizer"] = {"semantic": _rvq(r, "quantizer.rvq_first", 1, spec),
                           "acoustic": _rvq(r, "quantizer.rvq_rest", n - 1, spec)}
    r.check_all_used("Mimi: ")
    return params


def load_pretrained(path: str, num_codebooks: int = 32) -> tuple[Any, dict[str, Any]]:
    """(model ConfigDict of the `MIMI` preset with `num_codebooks`, params) from Kyutai's Mimi
    safetensors file at `path`. The checkpoint holds 32 codebooks; fewer keeps a prefix (the
    later acoustic codebooks are left out, not an error)."""
    import dataclasses

    if not 2 <= num_codebooks <= presets.MIMI.quantizer.num_codebooks:
        raise ValueError(f"load_pretrained: num_codebooks={num_codebooks} must be in "
                         f"[2, {presets.MIMI.quantizer.num_codebooks}]")
    spec = dataclasses.replace(presets.MIMI, quantizer=dataclasses.replace(
        presets.MIMI.quantizer, num_codebooks=num_codebooks))
    store = TensorStore(path)
    keep = num_codebooks - 1  # acoustic levels kept
    keys = [k for k in store if not (k.startswith("quantizer.rvq_rest.vq.layers.")
                                     and int(k.split(".")[4]) >= keep)]
    return spec_to_section(spec), params_from_state(store.__getitem__, keys, spec)
