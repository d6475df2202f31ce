"""Discrete pretransforms: audio <-> codes [B, n_q, T] for the pattern LM.

The pattern LM reads its codebook count and size from the pretransform (as stable-audio-tools
does), so `model.pretransform` is the single source of `n_q` and `codebook_size`.

Types (`model.pretransform.type`):

- ``"mulaw_rvq"``: `MuLawRVQ`, a deterministic, parameter-free tokenizer. Audio is mu-law
  companded, averaged over frames of `hop = sample_rate / frame_rate` samples and quantised by
  `n_q` residual scalar stages of `codebook_size` uniform cells each (stage k splits one cell of
  stage k-1). With `frame_rate == sample_rate` it is a sample-level residual mu-law quantiser.
  `encode(decode(codes)) == codes` (exact while the last cell, 2 / codebook_size**n_q, is well
  above float32 resolution); `decode(encode(x))` equals the frame means of x in the mu-law
  domain up to half of the last cell. It stands in for a neural codec in tests.
- ``"codes"``: `CodeSpace`, the code space of a codec that runs elsewhere (e.g. MusicGen's
  EnCodec 32 kHz): `n_q`, `codebook_size`, `sample_rate`, `frame_rate` only. Models train and
  sample on pre-computed codes; it has no `encode` / `decode`, and `is_codec(p)` is False.

A codec module adds its own type with `register(type_name, builder, rules)`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from audiolm.config import (MAX_CODEBOOKS, ConfigError, check_float, check_int, check_schema,
                            get_path, require, spec_from_section, spec_schema)
from audiolm.presets.pattern_lm_specs import CodeSpaceSpec, MuLawRVQSpec

__all__ = ["DiscretePretransform", "MuLawRVQ", "CodeSpace", "build", "validate", "register",
           "is_codec", "types"]


@runtime_checkable
class DiscretePretransform(Protocol):
    """Interface of a discrete audio tokenizer.

    Attributes: n_q (codebooks), codebook_size (codes per codebook), sample_rate (Hz),
    frame_rate (code frames per second), hop_length (samples per frame).
    encode(audio [B, N] float) -> codes [B, n_q, ceil(N / hop_length)] int32.
    decode(codes [B, n_q, T] int) -> audio [B, T * hop_length] float32.
    """
    n_q: int
    codebook_size: int
    sample_rate: int
    frame_rate: float
    hop_length: int

    def encode(self, audio: Any) -> jax.Array: ...

    def decode(self, codes: Any) -> jax.Array: ...


def is_codec(p: Any) -> bool:
    """True when `p` can turn audio into codes and back (not a bare CodeSpace)."""
    return isinstance(p, DiscretePretransform)


@dataclasses.dataclass(frozen=True)
class CodeSpace(CodeSpaceSpec):
    """Code space of an external codec: the LM needs only its n_q and codebook_size (the
    fields of `CodeSpaceSpec`)."""

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate / self.frame_rate))


@dataclasses.dataclass(frozen=True)
class MuLawRVQ(MuLawRVQSpec):
    """Deterministic residual scalar quantiser on mu-law companded, frame-averaged audio (the
    fields of `MuLawRVQSpec`).

    Stage k splits [-h_k, h_k] into L = codebook_size cells of width d_k = 2 h_k / L, with
    h_0 = 1 and h_k = d_{k-1} / 2 (one cell of the previous stage); code c stands for the cell
    centre -h_k + (c + 1/2) d_k. The later stages together stay strictly inside half a cell of
    stage k, so decoding then encoding gives back the same codes.
    """

    def __post_init__(self):
        if self.codebook_size < 2:
            raise ValueError(f"MuLawRVQ: codebook_size={self.codebook_size} must be >= 2")
        hop = self.sample_rate / self.frame_rate
        if abs(hop - round(hop)) > 1e-9 or round(hop) < 1:
            raise ValueError(f"MuLawRVQ: sample_rate / frame_rate = {self.sample_rate} / "
                             f"{self.frame_rate} must be a positive integer (samples per frame)")

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate / self.frame_rate))

    def stages(self) -> list[tuple[float, float]]:
        """(half-width h_k, cell width d_k) of each stage."""
        out, h = [], 1.0
        for _ in range(self.n_q):
            d = 2.0 * h / self.codebook_size
            out.append((h, d))
            h = d / 2.0
        return out

    def compress(self, x: jax.Array) -> jax.Array:
        return jnp.sign(x) * jnp.log1p(self.mu * jnp.abs(x)) / np.log1p(self.mu)

    def expand(self, y: jax.Array) -> jax.Array:
        return jnp.sign(y) * jnp.expm1(jnp.abs(y) * np.log1p(self.mu)) / self.mu

    def encode(self, audio: Any) -> jax.Array:
        """audio [B, N] float in [-1, 1] -> codes [B, n_q, ceil(N / hop)] int32.

        The last frame is zero-padded on the right. Values outside [-1, 1] are clipped.
        """
        audio = jnp.asarray(audio, jnp.float32)
        if audio.ndim != 2:
            raise ValueError(f"MuLawRVQ.encode: audio must be [B, N] (mono), got shape "
                             f"{audio.shape}")
        b, n = audio.shape
        hop = self.hop_length
        frames = -(-n // hop)
        audio = jnp.pad(jnp.clip(audio, -1.0, 1.0), ((0, 0), (0, frames * hop - n)))
        value = jnp.mean(self.compress(audio).reshape(b, frames, hop), axis=-1)
        return self.quantize(value)

    def quantize(self, value: jax.Array) -> jax.Array:
        """Frame values [B, T] in [-1, 1] (mu-law domain) -> codes [B, n_q, T] int32."""
        codes = []
        residual = value.astype(jnp.float32)
        for h, d in self.stages():
            c = jnp.clip(jnp.floor((residual + h) / d), 0, self.codebook_size - 1)
            residual = residual - ((c + 0.5) * d - h)
            codes.append(c.astype(jnp.int32))
        return jnp.stack(codes, axis=1)

    def dequantize(self, codes: Any) -> jax.Array:
        """codes [B, n_q, T] -> frame values [B, T] (mu-law domain)."""
        codes = jnp.asarray(codes)
        if codes.ndim != 3 or codes.shape[1] != self.n_q:
            raise ValueError(f"MuLawRVQ: codes shape {codes.shape} must be [B, n_q={self.n_q}, T]")
        value = jnp.zeros((codes.shape[0], codes.shape[2]), jnp.float32)
        for k, (h, d) in enumerate(self.stages()):
            value = value + ((codes[:, k].astype(jnp.float32) + 0.5) * d - h)
        return value

    def decode(self, codes: Any) -> jax.Array:
        """codes [B, n_q, T] -> audio [B, T * hop] float32 (each frame held for hop samples)."""
        value = self.dequantize(codes)
        audio = self.expand(value)
        return jnp.repeat(audio, self.hop_length, axis=1)


# ---------------------------------------------------------------------------------------------
# Config: validation and construction by type.

_BUILDERS: dict[str, Callable[[Any], Any]] = {}
_RULES: dict[str, Callable[[Any, str], None]] = {}


def register(type_name: str, builder: Callable[[Any], Any],
             rules: Callable[[Any, str], None]) -> None:
    """Adds pretransform type `type_name`: builder(section) -> pretransform, rules(config, path)."""
    _BUILDERS[type_name] = builder
    _RULES[type_name] = rules


def types() -> list[str]:
    return sorted(_BUILDERS)


def _common_rules(config: Any, path: str, spec: type) -> None:
    check_schema(config, path, spec_schema(spec))  # keys and types
    check_int(config, f"{path}.n_q", lo=1, hi=MAX_CODEBOOKS)
    check_int(config, f"{path}.codebook_size", lo=2)
    check_int(config, f"{path}.sample_rate", lo=1)
    check_float(config, f"{path}.frame_rate", lo=0.0, lo_open=True)


def _mulaw_rules(config: Any, path: str) -> None:
    _common_rules(config, path, MuLawRVQ)
    check_float(config, f"{path}.mu", lo=0.0, lo_open=True)
    sr, fr = get_path(config, f"{path}.sample_rate"), get_path(config, f"{path}.frame_rate")
    hop = sr / fr
    require(abs(hop - round(hop)) < 1e-9 and round(hop) >= 1, f"{path}.frame_rate", fr,
            f"{path}.sample_rate / frame_rate = {sr} / {fr} must be a positive integer "
            f"(samples per code frame)")


def _codes_rules(config: Any, path: str) -> None:
    _common_rules(config, path, CodeSpace)


def _from_section(cls: type) -> Callable[[Any], Any]:
    # The tokenizer is its spec: built from the section's fields (errors name model.pretransform).
    return lambda section: spec_from_section(cls, {"model": {"pretransform": section}},
                                             "model.pretransform")


register("mulaw_rvq", _from_section(MuLawRVQ), _mulaw_rules)
register("codes", _from_section(CodeSpace), _codes_rules)


def validate(config: Any, path: str = "model.pretransform") -> None:
    """Checks the pretransform section at dotted `path` of `config` (ConfigError on failure)."""
    section = get_path(config, path)
    require(hasattr(section, "keys"), path, section, "must be a section")
    type_name = get_path(config, f"{path}.type")
    require(type_name in _RULES, f"{path}.type", type_name,
            f"must be one of {types()} (a discrete pretransform)")
    _RULES[type_name](config, path)


def build(section: Any) -> Any:
    """Pretransform object of a (validated) `model.pretransform` section."""
    type_name = section["type"]
    if type_name not in _BUILDERS:
        raise ConfigError(f"model.pretransform.type={type_name!r}: must be one of {types()}")
    return _BUILDERS[type_name](section)
