"""Moshi-family generation: a streaming step (one frame of user codes in -> text token + audio
codes out) and a jitted full loop (`lax.scan` of that same step over frames).

Layout. Streams are [text, generated audio codebooks 0..dep_q-1, user codebooks dep_q..K-1]
(G = 1 + dep_q generated streams). Decode column s holds frame s - 1 - lag_q of stream q, or the
stream's initial token while s <= lag_q; lag_q is the per-stream delay, read from the model's
`audiolm.patterns` layout (`moshi.delay_pattern`). The tokens sampled at column s fill the
generated streams of column s + 1. Undelayed frames are recovered with `patterns.revert` (the
generate loop) or, in the streaming step, read back `max_delay` columns later.

User convention (Kyutai's `LMGen`): the user frame passed at step o is written to column
o + lag_q, i.e. it is frame o - 1 of the training layout (the one passed at step 0 is never
read). Absent user codebooks are given as -1 (embed to zeros).

State (`init_stream`): the model's decode state (ring KV caches), a token ring [B, 1+K, CT]
(CT = max_delay + 2, the columns still needed) and the column offset. Every row of a batch
advances together.

Sampling: greedy when the temperature is 0, else Kyutai's draw (`rules.kyutai_sample`:
softmax(logits/T), top-k, exponential-noise argmax) with separate text / audio settings, one
PRNG key per step split over the text token and each depformer slice.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from audiolm import patterns
from audiolm.config import ConfigError
from audiolm.models import moshi as M
from audiolm.nn.compile import fast_jit
from audiolm.sample import rules


@dataclasses.dataclass(frozen=True)
class Options:
    """Sampling settings (static). temperature 0 = greedy; top_k 0 = off."""
    temperature: float = 0.0  # audio
    top_k: int = 0
    text_temperature: float = 0.0
    text_top_k: int = 0


def options_from_config(config) -> Options:
    s = config.sample
    extra = s.get("extra", {})
    return Options(temperature=float(s.temperature), top_k=int(s.top_k),
                   text_temperature=float(extra.get("text_temperature", s.temperature)),
                   text_top_k=int(extra.get("text_top_k", s.top_k)))


def stream_lags(spec: M.MoshiSpec) -> np.ndarray:
    """[1+K] delay of each stream in decode columns, read from the model's pattern layout."""
    pattern = M.delay_pattern(spec, 1)
    return np.array([patterns.first_step_with(pattern, 0, q) - 1
                     for q in range(1 + spec.audio_codebooks)], np.int32)


def num_user_streams(spec: M.MoshiSpec) -> int:
    return spec.audio_codebooks - spec.dep_q


def init_stream(module: M.MoshiLM, batch: int) -> dict[str, Any]:
    """Empty streaming state for `batch` rows (see the module docstring)."""
    spec = module.spec
    if spec.dep_q == 0:
        raise ValueError("streaming generation needs a depformer (model.depformer.num_slices "
                         "> 0); this model is text-only")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"init_stream: batch={batch!r} must be a positive int")
    lags = stream_lags(spec)
    ring = np.tile(M.initial_tokens(spec)[None], (batch, 1, int(lags.max()) + 2))
    return {"model": module.init_state(batch), "ring": jnp.asarray(ring, jnp.int32),
            "offset": jnp.zeros((), jnp.int32)}


def _check_user(spec: M.MoshiSpec, user, batch: int | None = None, frames: bool = False):
    ku = num_user_streams(spec)
    want = "[B, K_user, N]" if frames else "[B, K_user]"
    ndim = 3 if frames else 2
    if user.ndim != ndim or user.shape[1] != ku or (batch is not None and user.shape[0] != batch):
        raise ValueError(f"user codes shape {tuple(user.shape)} must be {want} with K_user = "
                         f"model.audio_codebooks - model.depformer.num_slices = {ku}"
                         + (f" and B = {batch}" if batch is not None else ""))


def check_user_codes(spec: M.MoshiSpec, user, name: str = "user") -> None:
    """Host-side value check of user codes (any shape): -1 (absent) or 0..card-1; a rows count
    of 0 is an error. The jitted step cannot raise, and an id past the embedding table would
    be a NaN row, so `Sampler.step` / `Sampler.generate` call this first."""
    u = np.asarray(user)
    if u.ndim and u.shape[0] < 1:
        raise ValueError(f"{name} codes shape {u.shape}: the batch B must be >= 1")
    if not np.issubdtype(u.dtype, np.integer):
        raise ValueError(f"{name} codes must be integer ids, got {u.dtype}")
    bad = (u < -1) | (u >= spec.card)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} codes{list(where)} = {u[where]}: must be -1 (absent) or an id "
                         f"in 0..{spec.card - 1} (card = model.audio_vocab_size - 1)")


def step(module: M.MoshiLM, params, state, user, rng, conditions=None,
         options: Options = Options(), text_given=None, part: str = "frame"):
    """One streaming step (jit-able; `module` and `options` static).

    user [B, K_user] int (this step's user frame, LMGen convention; -1 = absent), rng a PRNG
    key. text_given [B] (optional) replaces the sampled text token (teacher-forced text; the
    second pass of fusion='concat'). part: 'frame' (one pass), or for fusion='concat' 'text'
    (samples the text token only) / 'audio' (needs text_given).
    Returns (state, out) with out = {"tokens": [B, G] sampled at this column (text first),
    "text_logits": [B, Vt], "frame": [B, G] undelayed frame offset - max_delay of the generated
    streams, "frame_valid": bool scalar (False for the first max_delay steps), "column":
    [B, 1+K] the input column this step read}.
    """
    spec = module.spec
    g = 1 + spec.dep_q
    lags = stream_lags(spec)
    ring, o = state["ring"], state["offset"]
    b, _, ct = ring.shape
    _check_user(spec, user, b)
    if num_user_streams(spec):
        slots = (o + jnp.asarray(lags[g:])) % ct  # user stream q lands in column o + lag_q
        hit = jax.nn.one_hot(slots, ct, dtype=bool)[None]  # [1, K_user, CT]
        ring = ring.at[:, g:].set(jnp.where(hit, user.astype(jnp.int32)[:, :, None],
                                            ring[:, g:]))
    col = ring[:, :, o % ct]
    is_init = o <= jnp.asarray(lags)
    col = jnp.where(is_init[None], jnp.asarray(M.initial_tokens(spec)[:, 0])[None], col)
    logits, hidden, model_state = module.apply({"params": params}, col[:, :, None],
                                               state["model"], conditions, part,
                                               method=M.MoshiLM.step)
    keys = jax.random.split(rng, g)
    if text_given is not None:
        text = jnp.asarray(text_given, jnp.int32)
    else:
        text = rules.kyutai_sample(logits, keys[0], options.text_temperature,
                                   options.text_top_k)
    out = [text]
    if part != "text":
        cache = module.init_depformer_cache(b)
        for k in range(spec.dep_q):
            lg, cache = module.apply({"params": params}, k, out[-1], hidden, cache,
                                     method=M.MoshiLM.depformer_step)
            out.append(rules.kyutai_sample(lg, keys[k + 1], options.temperature, options.top_k))
        tokens = jnp.stack(out, axis=1)
    else:  # text pass of concat: the audio columns are filled by the audio pass
        tokens = jnp.concatenate([text[:, None], col[:, 1:g]], axis=1)
    nxt = (o + 1) % ct
    ring = ring.at[:, :g, nxt].set(tokens)
    max_delay = int(lags.max())
    f = o - max_delay  # the newest frame complete in every stream
    idx = (f + 1 + jnp.asarray(lags[:g])) % ct
    frame = jnp.take_along_axis(ring[:, :g], jnp.broadcast_to(idx[None, :, None], (b, g, 1)),
                                axis=2)[:, :, 0]
    new_state = {"model": model_state, "ring": ring, "offset": o + 1}
    return new_state, {"tokens": tokens, "text_logits": logits, "frame": frame,
                       "frame_valid": f >= 0, "column": col}


def generated_codes(spec: M.MoshiSpec, tokens):
    """Per-step tokens [B, G, N] (as sampled at columns 0..N-1) -> undelayed codes
    [B, G, N - max_delay_g] of the generated streams through `patterns.revert` (frames before a
    stream's delay read the initial token, as in decoding)."""
    g = 1 + spec.dep_q
    lags = stream_lags(spec)[:g]
    n = tokens.shape[2]
    frames = n - int(lags.max())
    if frames < 1:
        raise ValueError(f"{n} steps give no complete frame: the generated streams' largest "
                         f"delay is {int(lags.max())}")
    init = jnp.asarray(M.initial_tokens(spec)[:g])
    seq = jnp.concatenate([jnp.broadcast_to(init[None], (tokens.shape[0], g, 1)),
                           tokens.astype(jnp.int32)], axis=2)
    col = jnp.arange(seq.shape[2])[None, None, :]
    seq = jnp.where(col <= jnp.asarray(lags)[None, :, None], init[None], seq)
    # The sub-layout of the generated streams needs a zero delay: drop the shared lead columns.
    base = int(lags.min())
    sub = patterns.moshi_delays((lags - base).tolist(), frames)
    seq = seq[:, :, base:]
    # The whole layout (not Moshi's training cut, which drops the delayed streams' tails).
    steps = patterns.num_steps(sub, keep_only_valid_steps=False)
    codes, _ = patterns.revert(sub, seq[:, :, :steps], init, keep_only_valid_steps=False)
    return codes


class Sampler:
    """Compiled Moshi generation for one module and sampling `options` (one compile per shape).

    `step(params, state, user [B, K_user], rng, conditions)` -> (state, out): the streaming step.
    `generate(params, user [B, K_user, N], rng, conditions)` -> dict(tokens [B, G, N] per step,
    text_logits [B, N, Vt], columns [B, 1+K, N] the inputs read, codes [B, G, N - max_delay]
    undelayed generated streams), a
    `lax.scan` of the same step over N frames on a preallocated state. fast_compile: compile
    with XLA's backend optimisation off (short runs, where compile time dominates).
    """

    def __init__(self, module: M.MoshiLM, options: Options = Options(),
                 fast_compile: bool = False):
        self.module = module
        self.options = options
        self.spec = module.spec
        jit = fast_jit if fast_compile else jax.jit
        if self.spec.fusion == "concat":
            self.step_fn = None
        else:
            self.step_fn = jit(lambda p, st, u, r, c: step(module, p, st, u, r, c, options))
        self._generate = jit(self._generate_impl)

    def init_stream(self, batch: int):
        return init_stream(self.module, batch)

    def step(self, params, state, user, rng, conditions=None):
        if self.step_fn is None:
            raise ValueError("fusion='concat' is text-first (all text, then all audio): it has "
                             "no frame-by-frame stream; use generate()")
        check_user_codes(self.spec, user)
        _check_user(self.spec, np.asarray(user), int(state["ring"].shape[0]))
        return self.step_fn(params, state, jnp.asarray(user, jnp.int32), rng, conditions)

    def generate(self, params, user, rng, conditions=None):
        check_user_codes(self.spec, user)
        user = jnp.asarray(user, jnp.int32)
        _check_user(self.spec, user, frames=True)
        if user.shape[2] < 1:
            raise ValueError("user codes need at least one frame (N >= 1)")
        return self._generate(params, user, rng, conditions)

    def _generate_impl(self, params, user, rng, conditions):
        module, options = self.module, self.options
        b, _, n = user.shape
        keys = jax.random.split(rng, n)
        xs = (jnp.moveaxis(user, 2, 0), keys)
        state = init_stream(module, b)
        if self.spec.fusion != "concat":
            def body(st, x):
                st, out = step(module, params, st, x[0], x[1], conditions, options)
                return st, (out["tokens"], out["text_logits"], out["column"])
            _, (tokens, logits, columns) = jax.lax.scan(body, state, xs)
        else:
            # Text-first: the text segment is decoded over all frames, then the audio segment
            # (positions continue in the same KV cache) with the text fixed.
            def text_body(st, x):
                st, out = step(module, params, st, x[0], x[1], conditions, options, part="text")
                return st, (out["tokens"][:, 0], out["text_logits"])
            st, (text, logits) = jax.lax.scan(text_body, state, xs)
            st = dict(st, ring=state["ring"], offset=state["offset"])

            def audio_body(st, x):
                st, out = step(module, params, st, x[0], x[1], conditions, options,
                               text_given=x[2], part="audio")
                return st, (out["tokens"], out["column"])
            _, (tokens, columns) = jax.lax.scan(audio_body, st, xs + (text,))
        tokens = jnp.moveaxis(tokens, 0, 2)  # [B, G, N]
        return {"tokens": tokens, "text_logits": jnp.moveaxis(logits, 0, 1),
                "columns": jnp.moveaxis(columns, 0, 2),
                "codes": generated_codes(self.spec, tokens)}


# ------------------------------------------------------------------------------------------
# --mode=sample


def _user_codes(spec: M.MoshiSpec, config, batch: int, frames: int) -> np.ndarray:
    """User codes [B, K_user, N] from `sample.extra.user_codes` (an .npy of [K_user, N] or
    [B, K_user, N]); absent: every user codebook -1 (contributes nothing)."""
    ku = num_user_streams(spec)
    path = config.sample.get("extra", {}).get("user_codes", "")
    if not path:
        return np.full((batch, ku, frames), M.ZERO_TOKEN, np.int32)
    codes = np.load(path).astype(np.int32)
    if codes.ndim == 2:
        codes = np.tile(codes[None], (batch, 1, 1))
    if codes.ndim != 3 or codes.shape[1] != ku or codes.shape[0] != batch:
        raise ValueError(f"sample.extra.user_codes={path!r}: shape {codes.shape} must be "
                         f"[K_user={ku}, N] or [B={batch}, K_user, N]")
    if codes.shape[2] < frames:
        pad = np.full((batch, ku, frames - codes.shape[2]), M.ZERO_TOKEN, np.int32)
        codes = np.concatenate([codes, pad], axis=2)
    if ((codes < -1) | (codes >= spec.card)).any():
        raise ValueError(f"sample.extra.user_codes={path!r}: ids must be -1 or in "
                         f"0..{spec.card - 1}")
    return codes[:, :, :frames]


def write_samples(module: M.MoshiLM, params, config, workdir: str) -> dict:
    """Generates `sample.num_samples` rows of `sample.max_new_tokens` frames and writes
    workdir/samples/tokens.npz (tokens [B, G, N] per step, codes [B, G, N - max_delay]
    undelayed, user [B, K_user, N]) and text.txt (one line per row: the text ids of the
    undelayed text stream without the padding ids). User codebooks come from
    `sample.extra.user_codes` (else absent, -1). A conditioned model is sampled with
    `moshi.example_conditions` drawn from `sample.seed` (random LUT values / tensors); no
    classifier-free guidance (`sample.cfg_scale` must be 1). No Mimi codec ships with audiolm,
    so no WAV is written. Returns a summary dict."""
    spec = module.spec
    if spec.dep_q == 0:
        raise ValueError("model.depformer.num_slices=0: this Moshi model generates no audio; "
                         "sampling needs a depformer")
    s = config.sample
    b, n = int(s.num_samples), int(s.max_new_tokens)
    lags = stream_lags(spec)
    if n <= int(lags[:1 + spec.dep_q].max()):
        raise ValueError(f"sample.max_new_tokens={n}: must exceed the generated streams' "
                         f"largest delay {int(lags[:1 + spec.dep_q].max())}")
    if float(s.cfg_scale) != 1.0:
        raise ConfigError(f"sample.cfg_scale={s.cfg_scale}: classifier-free guidance is not "
                          "implemented for the moshi family; use 1.0")
    options = options_from_config(config)
    user = _user_codes(spec, config, b, n)
    conditions = None
    if spec.conditioners:
        conditions = M.example_conditions(spec, b, np.random.default_rng(int(s.seed)))
    sampler = Sampler(module, options, fast_compile=n * b <= 4096)
    out = sampler.generate(params, user, jax.random.PRNGKey(int(s.seed)), conditions)
    tokens, codes = np.asarray(out["tokens"]), np.asarray(out["codes"])
    folder = os.path.join(workdir, "samples")
    os.makedirs(folder, exist_ok=True)
    np.savez(os.path.join(folder, "tokens.npz"), tokens=tokens, codes=codes, user=user)
    pads = {config.model.text_padding_id, config.model.text_end_padding_id, spec.text_initial}
    lines = [" ".join(str(int(t)) for t in row if int(t) not in pads) for row in codes[:, 0]]
    with open(os.path.join(folder, "text.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    summary = {"family": "moshi", "num_samples": b, "steps": n, "frames": int(codes.shape[2]),
               "options": dataclasses.asdict(options),
               "text_tokens": [len(line.split()) for line in lines],
               "files": ["tokens.npz", "text.txt"]}
    with open(os.path.join(folder, "moshi_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary
