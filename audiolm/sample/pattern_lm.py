"""Pattern-driven generation for the pattern LM (MusicGen / stable-audio-tools LM).

`generate` walks the full layout of `audiolm.patterns` (the functions the loss uses) for
`frames` frames:

1. the codes [B, K, frames] start unknown (-1) except for the prompt [B, K, P]; `patterns.build`
   lays them out as the sequence [B, K, S] (special token = card where the pattern has no code);
2. the conditioners run once; the prepend tokens and the steps before the first step holding
   frame P (all known) are prefilled into a preallocated KV cache of p + S slots;
3. a `lax.fori_loop` (a while loop with a fixed trip count) decodes one step per iteration: the
   logits at output position s - 1 (classifier-free guided on a doubled batch when
   cfg_scale != 1: rows [:B] conditional, [B:] null condition) are sampled with
   `rules.sample_logits`, the special token is written where the pattern has no code, known
   slots (the prompt) are never overwritten, and the step is fed back through the cache;
4. `patterns.revert` turns the sequence back into codes [B, K, frames].

`sample` is the compiled entry point (one compile per shape and static sampling setting);
`write_samples` is the family's `--mode=sample` writer (called by the `codes` task, see `audiolm.tasks.codes`).
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from audiolm import patterns
from audiolm.config import ConfigError
from audiolm.models import conditioners as cond_lib
from audiolm.models import pattern_lm as lm
from audiolm.models import pretransform as pretransform_lib
from audiolm.sample import rules

__all__ = ["generate", "sample", "write_samples", "batch_size_of", "trim_cross_conditions"]


def batch_size_of(conditions: Mapping[str, Any], prompt: Any, batch: int | None) -> int:
    """Rows B from the conditions, else the prompt, else `batch` (default 1)."""
    if conditions:
        return int(next(iter(conditions.values())).shape[0])
    if prompt is not None:
        return int(prompt.shape[0])
    return 1 if batch is None else int(batch)


def generate(module: lm.PatternLM, params: Any, conditions: Mapping[str, jax.Array] | None, *,
             frames: int, rng: jax.Array | None, prompt: jax.Array | None = None,
             temperature: Any = 1.0, top_k: int = 250, top_p: float = 1.0,
             cfg_scale: float = 1.0, batch: int | None = None) -> jax.Array:
    """Samples codes [B, K, frames] int32 (pure; jit-able with static frames / top_k / top_p /
    cfg_scale; `temperature` static or traced, 0 = greedy).

    conditions: the conditioners' arrays ``cond.<id>`` [B, ...] (B rows); prompt: codes
    [B, K, P] with 0 <= P < frames, kept as given in the output; batch: B when there are
    neither conditions nor a prompt.
    """
    spec = module.spec
    conditions = dict(conditions or {})
    if not isinstance(frames, int) or isinstance(frames, bool) or frames < 1:
        raise ValueError(f"generate: frames={frames!r} must be a positive int (static)")
    if rng is None:
        if not (isinstance(temperature, (int, float)) and temperature == 0):
            raise ValueError("generate: rng is required unless temperature is a static 0 (greedy)")
        rng = jax.random.PRNGKey(0)  # greedy: the keys are split but never used
    b = batch_size_of(conditions, prompt, batch)
    pattern = lm.pattern_for(spec, frames)
    if not pattern.starts_with_special:
        raise ValueError(f"generate: {pattern!r} has no leading special step (step 0 holds "
                         "codes), so no model output predicts its first codes; use a pattern "
                         "with empty_initial >= 0")
    codes = jnp.full((b, spec.n_q, frames), -1, jnp.int32)
    p_len = 0
    if prompt is not None:
        prompt = jnp.asarray(prompt, jnp.int32)
        if prompt.ndim != 3 or prompt.shape[:2] != (b, spec.n_q) or prompt.shape[2] >= frames:
            raise ValueError(f"generate: prompt shape {tuple(prompt.shape)} must be [B={b}, "
                             f"K={spec.n_q}, P] with P < frames={frames}")
        p_len = prompt.shape[2]
        codes = codes.at[:, :, :p_len].set(prompt)
    seq, mask = patterns.build(pattern, codes, spec.card)
    start = patterns.first_step_with(pattern, p_len)
    total = seq.shape[-1]
    guided = cfg_scale != 1.0
    rows = 2 * b if guided else b
    cond = module.apply({"params": params}, conditions, method=module.condition)
    if guided:  # doubled batch: conditional rows, then the null condition
        cond = jax.tree_util.tree_map(lambda c, n: jnp.concatenate([c, n], axis=0), cond,
                                      lm.null_condition(cond))
    p = cond["prepend"].shape[1] if spec.conditioning.prepend_ids else 0
    cache = lm.init_cache(spec, rows, p + total, module.dtype)

    def forward(tokens, cache, offset):
        """Logits [B, K, V] after the last of `tokens` [B, K, n] (guided), and the cache."""
        if guided:
            tokens = jnp.concatenate([tokens, tokens], axis=0)
        logits, cache = module.apply({"params": params}, tokens, cond, cache, offset,
                                     method=module.decode)
        logits = logits[:, :, -1]
        if guided:
            logits = rules.cfg_logits(*rules.split_cfg(logits), cfg_scale)
        return logits, cache

    last, cache = forward(seq[:, :, :start], cache, None)  # prefill: prepend + known steps

    def step(s, carry):
        seq, cache, last, rng = carry
        rng, key = jax.random.split(rng)
        nxt = rules.sample_logits(last, key, temperature, top_k, top_p)  # [B, K] for step s
        valid = jax.lax.dynamic_index_in_dim(mask, s, axis=1, keepdims=False)  # [K]
        nxt = jnp.where(valid[None, :], nxt, spec.card)
        cur = jax.lax.dynamic_index_in_dim(seq, s, axis=2, keepdims=False)
        new = jnp.where(cur == -1, nxt, cur)  # the prompt is never overwritten
        seq = jax.lax.dynamic_update_index_in_dim(seq, new, s, axis=2)
        last, cache = forward(new[:, :, None], cache, s)
        return seq, cache, last, rng

    seq, _, _, _ = jax.lax.fori_loop(start, total, step, (seq, cache, last, rng))
    out, _ = patterns.revert(pattern, seq, -1)
    return out


@functools.partial(jax.jit, static_argnames=("spec", "dtype", "frames", "top_k", "top_p",
                                             "cfg_scale", "greedy", "batch"))
def _sample(params, conditions, prompt, rng, temperature, *, spec, dtype, frames, top_k, top_p,
            cfg_scale, greedy, batch):
    module = lm.PatternLM(spec, dtype)
    return generate(module, params, conditions, frames=frames, rng=rng, prompt=prompt,
                    temperature=0.0 if greedy else temperature, top_k=top_k, top_p=top_p,
                    cfg_scale=cfg_scale, batch=batch)


def trim_cross_conditions(spec: lm.PatternLMSpec, conditions: Mapping[str, Any]) -> dict:
    """Cuts the pre-computed (t5 / tensor) condition sequences that only feed cross-attention to
    the last position any row's mask keeps (at least 1). Host side (numpy), before compiling.

    Masked keys get no attention weight, so the logits are unchanged (up to float summation
    order), while every decode step stops projecting the padding: an imported MusicGen's
    encoder states are padded to its max_position_embeddings (2048).
    """
    out = dict(conditions)
    ids = spec.conditioning
    for cid, c in ids.conditioners.items():
        if c.type not in ("t5", "tensor") or cid not in ids.cross_attention_ids \
                or cid in ids.prepend_ids or cid in ids.global_ids:
            continue
        key = f"cond.{cid}"
        if key not in out or key + ".mask" not in out:
            continue
        mask = np.asarray(out[key + ".mask"], bool)
        used = np.flatnonzero(mask.any(axis=0))
        keep = int(used[-1]) + 1 if used.size else 1
        if keep < mask.shape[1]:
            out[key] = np.asarray(out[key])[:, :keep]
            out[key + ".mask"] = mask[:, :keep]
    return out


def sample(module: lm.PatternLM, params: Any, conditions: Mapping[str, Any] | None = None, *,
           frames: int, rng: jax.Array | None = None, prompt: Any = None,
           temperature: float = 1.0, top_k: int = 250, top_p: float = 1.0,
           cfg_scale: float = 1.0, batch: int | None = None) -> jax.Array:
    """Compiled `generate`: one compile per (model, shapes, frames, top_k, top_p, cfg_scale,
    greedy or not); the temperature is a traced argument. Padding of cross-attention-only
    embedding conditions is cut first (`trim_cross_conditions`). Returns codes [B, K, frames]."""
    temperature = float(temperature)
    if temperature < 0:
        raise ValueError(f"sample: temperature={temperature} must be >= 0")
    greedy = temperature == 0.0
    if not greedy and rng is None:
        raise ValueError("sample: rng is required when temperature > 0")
    if not isinstance(frames, int) or isinstance(frames, bool) or frames < 1:
        raise ValueError(f"sample: frames={frames!r} must be a positive int")
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise ValueError(f"sample: batch={batch!r} must be a positive int")
    cond_lib.check_conditions(module.spec.conditioning.conditioners, conditions or {})
    if prompt is not None:
        lm.check_codes(module.spec, np.asarray(prompt), "prompt")
    conditions = trim_cross_conditions(module.spec, conditions or {})
    conditions = {k: jnp.asarray(v) for k, v in conditions.items()}
    b = batch_size_of(conditions, prompt, batch)
    return _sample(params, conditions, None if prompt is None else jnp.asarray(prompt, jnp.int32),
                   jax.random.PRNGKey(0) if rng is None else rng, jnp.float32(temperature),
                   spec=module.spec, dtype=module.dtype, frames=int(frames), top_k=int(top_k),
                   top_p=float(top_p), cfg_scale=float(cfg_scale), greedy=greedy, batch=b)


# ---------------------------------------------------------------------------------------------
# --mode=sample writer.


def _examples(batches: Iterable[dict[str, np.ndarray]], n: int, config: Any
              ) -> dict[str, np.ndarray]:
    """The first `n` rows of the held-out `batches` (cycled if the split is smaller)."""
    rows: list[dict[str, np.ndarray]] = []
    count = 0
    for batch in batches:
        rows.append(batch)
        count += next(iter(batch.values())).shape[0]
        if count >= n:
            break
    if not rows:
        raise ConfigError(f"data: the test split of data.name={config.data.get('name')!r} is "
                          "empty; --mode=sample takes its conditions from it")
    out = {k: np.concatenate([r[k] for r in rows], axis=0) for k in rows[0]}
    reps = -(-n // next(iter(out.values())).shape[0])
    return {k: np.concatenate([v] * reps, axis=0)[:n] for k, v in out.items()}


def write_samples(module: lm.PatternLM, params: Any, config: Any, workdir: str,
                  examples: Iterable[dict[str, np.ndarray]]) -> dict:
    """Samples `config.sample.num_samples` rows of `config.sample.max_new_tokens` frames and
    writes them to `workdir/samples/`: `tokens.npz` (codes [N, K, T], the conditions used) and,
    when the pretransform decodes codes to audio, `sample_<i>.wav`. The conditions (and, with
    `sample.extra.prompt_frames` = P > 0, a prompt of their first P frames) come from the
    held-out `examples` (the task's test batches). Returns the summary dict."""
    s = config.sample
    spec = module.spec
    n, frames = int(s.num_samples), int(s.max_new_tokens)
    extra = s.get("extra", None) or {}
    prompt_frames = int(extra.get("prompt_frames", 0))
    if not 0 <= prompt_frames < frames:
        raise ConfigError(f"sample.extra.prompt_frames={prompt_frames}: must be in [0, "
                          f"sample.max_new_tokens={frames})")
    examples = _examples(examples, n, config)
    conditions = {k: v for k, v in examples.items() if k.startswith("cond.")}
    prompt = None
    if prompt_frames:
        codes = examples["codes"]
        if codes.shape[2] < prompt_frames:
            raise ConfigError(f"sample.extra.prompt_frames={prompt_frames}: the held-out "
                              f"examples have only {codes.shape[2]} frames")
        prompt = codes[:, :, :prompt_frames]
    top_p = float(s.top_p)
    kwargs = dict(frames=frames, rng=jax.random.PRNGKey(int(s.seed)), prompt=prompt,
                  temperature=float(s.temperature), top_k=int(s.top_k), top_p=top_p,
                  cfg_scale=float(s.cfg_scale), batch=n)
    t0 = time.perf_counter()
    codes = np.asarray(jax.block_until_ready(sample(module, params, conditions, **kwargs)))
    seconds = time.perf_counter() - t0  # first call: includes compilation
    out_dir = os.path.join(workdir, "samples")
    os.makedirs(out_dir, exist_ok=True)
    tokens_path = os.path.join(out_dir, "tokens.npz")
    np.savez(tokens_path, codes=codes, prompt_frames=np.int32(prompt_frames),
             **{k.replace(".", "__"): np.asarray(v) for k, v in conditions.items()})
    summary: dict[str, Any] = {
        "family": "pattern_lm", "num_samples": n, "frames": frames,
        "prompt_frames": prompt_frames, "codebooks": spec.n_q, "card": spec.card,
        "temperature": float(s.temperature), "top_k": int(s.top_k), "top_p": top_p,
        "cfg_scale": float(s.cfg_scale), "seed": int(s.seed), "tokens": tokens_path,
        "generate_seconds_with_compile": round(seconds, 3), "wavs": [],
    }
    pt = pretransform_lib.build(config.model.pretransform)
    if pretransform_lib.is_codec(pt):
        from audiolm.audio import io as audio_io

        audio = np.asarray(pt.decode(jnp.asarray(codes)), np.float32)  # [N, samples]
        for i in range(n):
            path = os.path.join(out_dir, f"sample_{i}.wav")
            audio_io.write_audio(path, audio[i], int(pt.sample_rate))
            summary["wavs"].append(path)
        summary["sample_rate"] = int(pt.sample_rate)
        summary["audio_seconds"] = audio.shape[1] / float(pt.sample_rate)
    else:
        summary["audio"] = (f"none: pretransform type {config.model.pretransform.type!r} has no "
                            "decoder here (codes only)")
    return summary
