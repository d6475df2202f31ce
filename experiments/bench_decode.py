"""Benchmark: decode throughput of our jitted decoders vs the references (CPU, fp32, greedy).

One run, same weights on both sides (each reference model is random, written to disk and read
back by our importer), greedy decoding so that both sides must emit the same tokens (checked:
the `match` column counts the leading steps that agree for every row). Parts (--parts):

  thinker   Thinker text generation: prompt [B, P] -> max_new_tokens (no EOS stop) vs
            transformers `Qwen3OmniMoeThinkerForConditionalGeneration.generate` (KV cache).
  moshi     Kyutai temporal + depth transformer, one frame per call (streaming: frame codes of
            the user stream in, text token + dep_q audio codes out, host sync every frame) vs
            moshi 0.2.13 `LMGen.step` in a `streaming(B)` context; tokens = frames x (1 + dep_q);
            real-time factor (RTF) = frames/s at the given batch / --moshi-frame-rate (Mimi: 12.5).
  musicgen  pattern LM with a delay pattern and a cross-attention condition vs transformers
            `MusicgenForCausalLM.generate` (its own delay pattern mask); tokens = frames x K.
  code2wav  Qwen3-Omni Code2Wav chunked (streaming) decoding of [B, G, frames] codes vs
            transformers `Qwen3OmniMoeCode2Wav.chunked_decode` with the same chunk / left
            context; RTF = seconds of audio per second of compute.

Ours and the reference alternate inside every repeat (the machine is shared); warm-up first
(ours: the first call compiles, reported as `1st`); median of --repeats. Both sides on one CPU
core by default (--threads; the process is pinned, bench_thinker.setup_threads).

    python experiments/bench_decode.py                         # small sizes, B = 1 and 8
    python experiments/bench_decode.py --size=tiny --parts=moshi,musicgen --json=/tmp/d.json

Which decoders are "ours" is one line below (`decoders = ...`): `SampleDecoders`, audiolm.sample's
compiled samplers (issue 8), or `ModelLevelDecoders`, the model-level decode APIs (Thinker KV
cache, MoshiLM.step / depformer_step, pattern LM decode) wrapped in jitted loops here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from experiments import bench_thinker, bench_train  # noqa: E402

PARTS = ("thinker", "moshi", "musicgen", "code2wav")


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma separated of {PARTS}")
    ap.add_argument("--size", default="small", choices=("tiny", "small"))
    ap.add_argument("--layers", type=int, default=0,
                    help="override every model's layer count (0: the size's own)")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--prompt", type=int, default=16, help="Thinker prompt tokens")
    ap.add_argument("--new-tokens", type=int, default=64, help="Thinker generated tokens")
    ap.add_argument("--frames", type=int, default=64, help="Moshi / MusicGen generated frames")
    ap.add_argument("--moshi-frame-rate", type=float, default=12.5,
                    help="frames per second of the codec (Mimi: 12.5) for the RTF")
    ap.add_argument("--c2w-frames", type=int, default=50, help="Code2Wav frames decoded")
    ap.add_argument("--c2w-chunk", type=int, default=10, help="Code2Wav frames per chunk")
    ap.add_argument("--c2w-context", type=int, default=25, help="Code2Wav left-context frames")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU cores for torch and XLA (1: both on one pinned core; 0: defaults)")
    ap.add_argument("--decoders", default="", choices=("", "sample", "model"),
                    help="ours: audiolm.sample's samplers or the model-level loops of this "
                         "script (default: the `decoders` line of the script)")
    ap.add_argument("--fast-compile", action="store_true",
                    help="compile ours with XLA backend optimisation off (smoke tests only: "
                         "fast compiles, slower code)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="", help="write the results to this JSON file")
    return ap.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Our decoders: jitted loops over the model-level decode APIs.


JIT_OPTIONS: dict = {}  # compiler_options of our jits (set by main from --fast-compile)


def _jit(fn):
    import jax

    return jax.jit(fn, compiler_options=JIT_OPTIONS or None)


class ModelLevelDecoders:
    """Greedy decoders built on the model modules' own decode entry points."""

    name = "model-level decode APIs (jitted loops in this script)"

    @staticmethod
    def thinker_generate(model_config, new_tokens: int):
        """fn(params {"thinker", ...}, prompt [B, P] int32) -> generated [B, new_tokens]:
        prefill into a preallocated KV cache, then new_tokens - 1 cached steps in a fori_loop;
        one jit."""
        import jax
        import jax.numpy as jnp

        from audiolm.models import thinker as thinker_lib

        module = thinker_lib.build(model_config)

        def generate(params, prompt):
            params = params["thinker"]
            b, p = prompt.shape
            caches = module.init_caches(b, p + new_tokens)
            out = module.apply({"params": params}, prompt, caches=caches)
            first = jnp.argmax(out["logits"][:, -1], -1).astype(jnp.int32)
            toks = jnp.zeros((b, new_tokens), jnp.int32).at[:, 0].set(first)

            def body(i, carry):
                toks, caches = carry
                prev = jax.lax.dynamic_slice_in_dim(toks, i - 1, 1, axis=1)
                out = module.apply({"params": params}, prev, caches=caches)
                nxt = jnp.argmax(out["logits"][:, -1], -1).astype(jnp.int32)
                return jax.lax.dynamic_update_slice_in_dim(toks, nxt[:, None], i, axis=1), \
                    out["caches"]

            toks, _ = jax.lax.fori_loop(1, new_tokens, body, (toks, out["caches"]))
            return toks

        return _jit(generate)

    @staticmethod
    def moshi_streamer(module):
        """(init(batch) -> state, step(params, state, user [B, K - dep_q]) -> (state, out
        [B, 1 + dep_q])): one jitted call per frame. The step builds the delayed input column
        (stream q reads frame o - delay_q; the initial token before it exists), runs the
        temporal step and the dep_q depformer slices with greedy choices."""
        import jax
        import jax.numpy as jnp
        import numpy as np

        from audiolm.models import moshi as M

        spec = module.spec
        dq, k = spec.dep_q, spec.audio_codebooks
        init_tok = jnp.asarray(M.initial_tokens(spec)[:, 0])
        delays = np.asarray(spec.delays)
        ring = int(delays.max()) + 1
        d_gen, d_user = jnp.asarray(delays[:1 + dq]), jnp.asarray(delays[1 + dq:])

        def init(batch):
            return {"model": module.init_state(batch),
                    "prev": jnp.zeros((batch, 1 + dq), jnp.int32),
                    "user": jnp.zeros((batch, k - dq, ring), jnp.int32),
                    "frame": jnp.zeros((), jnp.int32)}

        def step(params, state, user):
            o = state["frame"]
            b = user.shape[0]
            hist = jax.lax.dynamic_update_slice_in_dim(
                state["user"], user.astype(jnp.int32)[:, :, None], o % ring, axis=2)
            gen = jnp.where((o - 1 - d_gen >= 0)[None], state["prev"], init_tok[None, :1 + dq])
            idx = jnp.broadcast_to(((o - d_user) % ring)[None, :, None], (b, k - dq, 1))
            usr = jnp.take_along_axis(hist, idx, axis=2)[..., 0]
            usr = jnp.where((o - d_user >= 1)[None], usr, init_tok[None, 1 + dq:])
            column = jnp.concatenate([gen, usr], axis=1)[:, :, None]
            logits, hidden, model_state = module.apply(
                {"params": params}, column, state["model"], method=M.MoshiLM.step)
            out = [jnp.argmax(logits, -1).astype(jnp.int32)]
            cache = module.init_depformer_cache(b)
            for q in range(dq):
                lg, cache = module.apply({"params": params}, q, out[-1], hidden, cache,
                                         method=M.MoshiLM.depformer_step)
                out.append(jnp.argmax(lg, -1).astype(jnp.int32))
            out = jnp.stack(out, axis=1)
            return {"model": model_state, "prev": out, "user": hist, "frame": o + 1}, out

        jitted = _jit(step)
        return init, lambda params, state, user, rng: jitted(params, state, user)

    @staticmethod
    def pattern_generate(module, frames: int):
        """fn(params, conditions, rng) -> codes [B, K, frames], greedy: the pattern LM's decode
        loop is `audiolm.sample.pattern_lm.generate` in both decoder sets (models/ has none)."""
        from audiolm.sample import pattern_lm as pattern_sample

        return _jit(lambda p, c, r: pattern_sample.generate(
            module, p, c, frames=frames, rng=r, temperature=0.0, top_k=0, cfg_scale=1.0))

    @staticmethod
    def code2wav_stream(module, chunk: int, context: int):
        """fn(params, codes [B, G, T]) -> wav: audiolm.models.code2wav.chunked_decode (it
        jits a new function per call, so every call compiles its chunk shapes again)."""
        from audiolm.models import code2wav as cw

        return lambda p, codes: cw.chunked_decode(module, p, codes, chunk, context)

    @staticmethod
    def code2wav_stream_compiled(module, chunk: int, context: int):
        """chunked_decode's chunking and trimming around one Code2Wav apply jitted once (what
        a streaming server holds): chunks of `chunk` frames, each after the first decoded with
        up to `context` preceding frames whose samples are dropped on the full decode's grid."""
        import jax.numpy as jnp

        from audiolm.models import code2wav as cw

        c = module.config
        per_frame, trim = cw.total_upsampling(c), cw.start_trim(c)
        apply = _jit(lambda p, x: module.apply({"params": p}, x))

        def decode(params, codes):
            pieces = []
            for start in range(0, codes.shape[-1], chunk):
                end = min(start + chunk, codes.shape[-1])
                ctx = min(context, start)
                wav = apply(params, codes[..., start - ctx:end])
                pieces.append(wav[:, ctx * per_frame - trim:] if start else wav)
            return jnp.concatenate(pieces, axis=-1)

        return decode


class SampleDecoders(ModelLevelDecoders):
    """audiolm.sample's compiled samplers (issue 8), greedy: moshi.Sampler's streaming step,
    sample.pattern_lm.generate, thinker_talker.TextSampler, and Code2Wav streaming through
    audiolm.models.code2wav.stream_step (the Talker -> Code2Wav stream's decoder)."""

    name = ("audiolm.sample (Moshi Sampler.step, pattern_lm.generate, TextSampler) + "
            "code2wav.stream_step")

    @staticmethod
    def thinker_generate(model_config, new_tokens: int):
        import jax
        import numpy as np

        from audiolm.models import thinker_talker as family
        from audiolm.sample import thinker_talker as tt_sample

        sampler = tt_sample.TextSampler(
            family.build(model_config),
            tt_sample.TextOptions(max_new_tokens=new_tokens, temperature=0.0, eos_id=None),
            fast_compile=bool(JIT_OPTIONS))
        key = jax.random.PRNGKey(0)

        def generate(params, prompt):
            prompt = np.asarray(prompt)
            return sampler.generate({"aut": params["aut"], "thinker": params["thinker"]}, prompt,
                                    np.ones(prompt.shape, bool), key)["tokens"]

        return generate

    @staticmethod
    def moshi_streamer(module):
        from audiolm.sample import moshi as moshi_sample

        sampler = moshi_sample.Sampler(module, moshi_sample.Options(),
                                       fast_compile=bool(JIT_OPTIONS))

        def step(params, state, user, rng):
            state, out = sampler.step(params, state, user, rng)
            return state, out["tokens"]

        return sampler.init_stream, step

    @staticmethod
    def code2wav_stream_compiled(module, chunk: int, context: int):
        """audiolm.models.code2wav.stream_step fed `chunk` frames at a time (its decoder is
        jitted once per shape, at module level)."""
        import jax.numpy as jnp

        from audiolm.models import code2wav as cw

        def decode(params, codes):
            state, pieces = cw.init_stream(module.config, codes.shape[0]), []
            for start in range(0, codes.shape[-1], chunk):
                state, wav = cw.stream_step(module, params, state, codes[..., start:start + chunk],
                                            left_context=context,
                                            fast_compile=bool(JIT_OPTIONS))
                pieces.append(wav)
            return jnp.concatenate(pieces, axis=-1)

        return decode


# The decoders under test: switching between audiolm.sample and the model-level APIs is here
# (or per run with --decoders).
decoders = SampleDecoders
DECODERS = {"sample": SampleDecoders, "model": ModelLevelDecoders}


# ---------------------------------------------------------------------------------------------
# Helpers.


def alternate(fns: dict, repeats: int, cpu: dict | None = None) -> dict:
    return bench_thinker.alternate(fns, repeats, cpu)


def first_call(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def leading_match(a, b) -> int:
    """Leading steps (last axis) on which a and b agree for every row."""
    import numpy as np

    a, b = np.asarray(a), np.asarray(b)
    same = (a == b).reshape(-1, a.shape[-1]).all(axis=0)
    return int(a.shape[-1] if same.all() else np.argmin(same))


# ---------------------------------------------------------------------------------------------
# Parts.


def c2w_overrides(size: str) -> dict:
    """transformers code2wav_config overrides: small = the published layout (upsampling
    [8, 5, 4, 3] x [2, 2] = 1920 samples per frame at 24 kHz, 12.5 frames/s) at small widths."""
    if size == "tiny":
        return {}
    return {"code2wav_config": dict(hidden_size=128, num_attention_heads=4, num_key_value_heads=4,
                                    intermediate_size=256, num_hidden_layers=2, sliding_window=72,
                                    upsample_rates=[8, 5, 4, 3], upsampling_ratios=[2, 2],
                                    decoder_dim=96)}


def hbm_fraction(model_config, params, batch: int, prompt: int, new_tokens: int,
                 seconds: float) -> float | None:
    """Fraction of the HBM roofline of one Thinker decode step: (bytes of the weights a step
    reads + KV cache bytes at the mean length) / step time / device bandwidth
    (`bench_train.HBM_BANDWIDTH`); None where the bandwidth is unknown (CPU). Weights read per
    step: the non-embedding parameters active for `batch` tokens (routed experts: at most
    min(E, batch x top_k) of them)."""
    import jax

    from audiolm.models import thinker_talker

    _, bandwidth = bench_train.hbm_bandwidth()
    if bandwidth is None:
        return None
    th = model_config.thinker
    comp = thinker_talker.describe_params(model_config)["thinker"]
    itemsize = jax.tree_util.tree_leaves(params["thinker"])[0].dtype.itemsize
    e, k = th.num_experts, th.num_experts_per_tok
    # total - active = the (E - k) routed experts a token skips, summed over MoE layers.
    per_expert = (comp["total"] - comp["active"]) / (e - k) if e > k else 0.0
    weights = comp["active"] - comp["embedding"] + (min(e, batch * k) - k) * per_expert
    mean_len = prompt + new_tokens / 2
    kv = 2 * th.num_layers * th.num_kv_heads * th.head_dim * mean_len * batch
    step_bytes = (weights + kv) * itemsize
    return step_bytes / (seconds / new_tokens) / bandwidth


def bench_thinker_decode(args, batches, pair):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    model, model_config, params = pair
    th_params = {k: jax.tree_util.tree_map(jnp.asarray, params[k]) for k in ("aut", "thinker")}
    gen = decoders.thinker_generate(model_config, args.new_tokens)
    rows = []
    for b in batches:
        prompt = bench_thinker.text_tokens(b, args.prompt, args.seed + b)
        ids, mask = torch.from_numpy(prompt), torch.ones(prompt.shape, dtype=torch.long)
        ours_in = jnp.asarray(prompt, jnp.int32)

        def ref():
            with torch.no_grad():
                return model.thinker.generate(input_ids=ids, attention_mask=mask,
                                              max_new_tokens=args.new_tokens,
                                              min_new_tokens=args.new_tokens, do_sample=False,
                                              pad_token_id=0)[:, args.prompt:]

        ours = lambda: np.asarray(gen(th_params, ours_in))  # noqa: E731
        got, first = first_call(ours)
        want = ref().numpy()
        for _ in range(args.warmup):
            ours(), ref()
        c = {}
        t = alternate({"ours": ours, "ref": ref}, args.repeats, c)
        n = b * args.new_tokens
        rows.append(dict(part="thinker", batch=b, unit="tok", ref_s=t["ref"], ours_s=t["ours"],
                         ours_first_s=first, ref_rate=n / t["ref"], ours_rate=n / t["ours"],
                         speedup=t["ref"] / t["ours"], cpu_speedup=c["ref"] / c["ours"],
                         match=leading_match(got, want),
                         steps=args.new_tokens,
                         hbm_fraction=hbm_fraction(model_config, th_params, b, args.prompt,
                                                   args.new_tokens, t["ours"])))
    th = model_config.thinker
    desc = (f"thinker: {th.num_layers} layers, width {th.hidden_size}, {th.num_experts} experts "
            f"top-{th.num_experts_per_tok}, vocab {th.vocab_size}; prompt {args.prompt}, "
            f"{args.new_tokens} new tokens; reference experts implementation "
            f"{model.thinker.config.text_config._experts_implementation}")
    return rows, desc


def moshi_config(size: str, layers: int):
    from audiolm.config import spec_to_section
    from audiolm.presets import moshi as cm

    if size == "tiny":
        m = cm.tiny()
        m.temporal.context = 4 * 64  # longer than the run: no ring wrap-around
    else:
        m = spec_to_section(cm.MoshiSpec(
            text_in_vocab_size=1001, text_out_vocab_size=1000, audio_vocab_size=257,
            audio_codebooks=8, delays=cm.stream_delays(8, 4, 1),
            temporal=cm.TemporalSpec(hidden_size=256, num_layers=4, num_heads=8, num_kv_heads=8,
                                     ffn_hidden=672, context=256, rope_theta=10000.0),
            depformer=cm.DepformerSpec(num_slices=4, hidden_size=128, num_layers=2, num_heads=4,
                                       ffn_hidden=256)))
    if layers:
        m.temporal.num_layers = layers
        m.depformer.num_layers = min(layers, m.depformer.num_layers)
    return m


def bench_moshi(args, batches):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from tests import reference_moshi as ref_lib

    from audiolm.importers import moshi as ck
    from audiolm.models import moshi as M

    torch = ref_lib.torch
    from moshi.models.lm import LMGen

    m = moshi_config(args.size, args.layers)
    if m.temporal.context < args.frames:
        m.temporal.context = args.frames
    ref = ref_lib.reference_model(m, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="bench_moshi_") as folder:
        ref_lib.save_checkpoint(ref, m, folder)
        config, params = ck.load_pretrained(folder)
    params = jax.tree_util.tree_map(jnp.asarray, params)
    module = M.build(config)
    spec = module.spec
    init, step = decoders.moshi_streamer(module)
    key = jax.random.PRNGKey(args.seed)  # unused by greedy decoding
    n_user = spec.audio_codebooks - spec.dep_q
    rows = []
    for b in batches:
        user = np.random.default_rng(args.seed + b).integers(0, spec.card,
                                                              (b, n_user, args.frames))
        user_t = torch.from_numpy(user).long()
        user_j = [jnp.asarray(user[:, :, o], jnp.int32) for o in range(args.frames)]
        texts, audios = [], []
        gen = LMGen(ref, use_sampling=False, on_text_hook=lambda t: texts.append(t.clone()),
                    on_audio_hook=lambda a: audios.append(a.clone()))

        def reference():
            texts.clear(), audios.clear()
            with gen.streaming(b):
                for o in range(args.frames):
                    gen.step(user_t[:, :, o:o + 1])

        def ours():
            state, outs = init(b), []
            for o in range(args.frames):
                state, out = step(params, state, user_j[o], key)
                outs.append(np.asarray(out))  # the frame is needed on the host (streaming)
            return np.stack(outs, axis=2)

        got, first = first_call(ours)
        with torch.no_grad():
            reference()
            want = np.concatenate([torch.stack(texts, 1).numpy()[:, None],
                                   torch.stack(audios, 2).numpy()], axis=1)
            for _ in range(args.warmup):
                ours(), reference()
            c = {}
            t = alternate({"ours": ours, "ref": reference}, args.repeats, c)
        n = b * args.frames * (1 + spec.dep_q)
        fps_ours, fps_ref = args.frames / t["ours"], args.frames / t["ref"]
        rows.append(dict(part="moshi", batch=b, unit="tok", ref_s=t["ref"], ours_s=t["ours"],
                         ours_first_s=first, ref_rate=n / t["ref"], ours_rate=n / t["ours"],
                         speedup=t["ref"] / t["ours"], cpu_speedup=c["ref"] / c["ours"],
                         match=leading_match(got, want),
                         steps=args.frames, ref_rtf=fps_ref / args.moshi_frame_rate,
                         ours_rtf=fps_ours / args.moshi_frame_rate))
    tr = spec.temporal
    desc = (f"moshi: temporal {tr.num_layers} layers width {tr.hidden_size}, depformer "
            f"{spec.depformer.num_layers} layers width {spec.depformer.hidden_size}, "
            f"{spec.audio_codebooks} "
            f"codebooks (dep_q {spec.dep_q}), delays {list(spec.delays)}; {args.frames} frames, "
            f"RTF at {args.moshi_frame_rate} frames/s")
    return rows, desc


def musicgen_sizes(size: str, layers: int) -> dict:
    d = dict(vocab_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             ffn_dim=64, num_codebooks=4) if size == "tiny" else dict(
        vocab_size=1024, hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
        ffn_dim=1024, num_codebooks=4)
    if layers:
        d["num_hidden_layers"] = layers
    return d


def bench_musicgen(args, batches):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    import transformers

    from audiolm import patterns
    from audiolm.importers import musicgen
    from audiolm.models import pattern_lm

    sizes = musicgen_sizes(args.size, args.layers)
    k, v, d = sizes["num_codebooks"], sizes["vocab_size"], sizes["hidden_size"]
    torch.manual_seed(args.seed)
    cfg = transformers.MusicgenDecoderConfig(
        **sizes, max_position_embeddings=args.frames + k + 8, pad_token_id=v, bos_token_id=v,
        activation_function="gelu", dropout=0.0)
    ref = transformers.MusicgenForCausalLM(cfg).eval()
    ref.config._attn_implementation = "eager"
    # Weights ~ N(0, 1/fan_in), LayerNorms around 1: decisive logits, so that greedy choices do
    # not hinge on fp32 rounding (transformers' 0.02-std init leaves near-ties at this width).
    gen_w = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            noise = torch.randn(p.shape, generator=gen_w)
            if "layer_norm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * noise)
            else:
                p.copy_(noise / max(p.shape[-1], 1) ** 0.5)
    with tempfile.TemporaryDirectory(prefix="bench_musicgen_") as path:
        ref.save_pretrained(path)
        config, params = musicgen.load_pretrained(path)
    params = jax.tree_util.tree_map(jnp.asarray, params)
    module = pattern_lm.build(config)
    gen = decoders.pattern_generate(module, args.frames)
    cond_len = 8
    # MusicGen's own generate reads every field from the config (no defaults filled in).
    gen_cfg = transformers.GenerationConfig(
        max_new_tokens=args.frames + k - 1, do_sample=False, num_beams=1, num_return_sequences=1,
        pad_token_id=v, bos_token_id=v, decoder_start_token_id=v, use_cache=True,
        guidance_scale=None)
    no_cache_cfg = transformers.GenerationConfig(**{**gen_cfg.to_dict(), "use_cache": False})
    rows, agree = [], []
    for b in batches:
        ehs = np.random.default_rng(args.seed + b).standard_normal((b, cond_len, d)).astype(
            np.float32)
        ehs_t = torch.from_numpy(ehs)
        ehs_mask_t = torch.ones((b, cond_len), dtype=torch.long)
        conds = {f"cond.{musicgen.CROSS_ID}": jnp.asarray(ehs),
                 f"cond.{musicgen.CROSS_ID}.mask": jnp.ones((b, cond_len), bool)}
        bos = torch.full((b * k, 1), v, dtype=torch.long)
        key = jax.random.key(args.seed)

        def reference(config=gen_cfg):
            with torch.no_grad():
                return ref.generate(input_ids=bos, encoder_hidden_states=ehs_t,
                                    encoder_attention_mask=ehs_mask_t, generation_config=config)

        ours = lambda: np.asarray(gen(params, conds, key))  # noqa: E731
        got, first = first_call(ours)
        # transformers 5.23's MusicGen generate (cached with cross-attention, and at these
        # sizes uncached too) picks tokens its own forward does not rank first; the check is
        # therefore against the reference model itself: the argmax of its teacher-forced logits
        # on our pattern sequence must be our token at every valid step.
        pattern = patterns.make("delay", k, args.frames)
        seq, valid = patterns.build(pattern, jnp.asarray(got), v)
        seq, valid = np.array(seq), np.asarray(valid)
        with torch.no_grad():
            logits = ref(input_ids=torch.from_numpy(seq.reshape(b * k, -1)),
                         encoder_hidden_states=ehs_t,
                         encoder_attention_mask=ehs_mask_t).logits.numpy()
        best = logits.reshape(b, k, seq.shape[-1], v).argmax(-1)
        ok = ((best[:, :, :-1] == seq[:, :, 1:]) | ~valid[None, :, 1:]).all(axis=(0, 1))
        ref_tokens = reference(no_cache_cfg).numpy()
        agree.append(float((ref_tokens == got).mean()) if ref_tokens.shape == got.shape else 0.0)
        for _ in range(args.warmup):
            ours(), reference()
        c = {}
        t = alternate({"ours": ours, "ref": reference}, args.repeats, c)
        n = b * k * args.frames
        rows.append(dict(part="musicgen", batch=b, unit="tok", ref_s=t["ref"], ours_s=t["ours"],
                         ours_first_s=first, ref_rate=n / t["ref"], ours_rate=n / t["ours"],
                         speedup=t["ref"] / t["ours"], cpu_speedup=c["ref"] / c["ours"],
                         match=len(ok) if ok.all() else int(np.argmin(ok)), steps=len(ok),
                         generate_agreement=agree[-1]))
    desc = (f"musicgen: {sizes['num_hidden_layers']} layers width {d}, {k} codebooks x {v}, "
            f"delay pattern, cross-attention to {cond_len} condition tokens; {args.frames} "
            f"frames, no CFG; match = steps where our token is the argmax of the reference's "
            f"teacher-forced logits (its generate is not self-consistent); tokens equal to "
            f"transformers' uncached generate: {', '.join(f'{a:.1%}' for a in agree)}")
    return rows, desc


def bench_code2wav(args, batches, pair):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from audiolm.models import code2wav as cw

    model, model_config, params = pair
    c = model_config.code2wav
    module = cw.build(c)
    c2w_params = jax.tree_util.tree_map(jnp.asarray, params["code2wav"])
    variants = {"chunked_decode": decoders.code2wav_stream(module, args.c2w_chunk,
                                                           args.c2w_context),
                "stream": decoders.code2wav_stream_compiled(module, args.c2w_chunk,
                                                                    args.c2w_context)}
    ref = model.code2wav
    rows = []
    for b in batches:
        codes = np.random.default_rng(args.seed + b).integers(
            0, c.codebook_size, (b, c.num_codebooks, args.c2w_frames))
        codes_t, codes_j = torch.from_numpy(codes).long(), jnp.asarray(codes, jnp.int32)

        def reference():
            with torch.no_grad():
                return ref.chunked_decode(codes_t, chunk_size=args.c2w_chunk,
                                          left_context_size=args.c2w_context)

        fns, firsts, outs = {"ref": reference}, {}, {}
        for name, decode in variants.items():
            fns[name] = (lambda d: lambda: np.asarray(d(c2w_params, codes_j)))(decode)
            outs[name], firsts[name] = first_call(fns[name])
        same = float(np.abs(outs["chunked_decode"] - outs["stream"]).max())
        if same > 1e-5:
            raise SystemExit(f"code2wav: the streamed decode differs from chunked_decode "
                             f"by {same:.2e}")
        for _ in range(args.warmup):
            reference(), fns["stream"]()
        # chunked_decode recompiles on every call: one timed run each is enough.
        cpu = {}
        t = alternate({"ref": reference, "stream": fns["stream"]}, args.repeats, cpu)
        c0, t0 = time.process_time(), time.perf_counter()
        fns["chunked_decode"]()
        t["chunked_decode"], cpu["chunked_decode"] = time.perf_counter() - t0, \
            time.process_time() - c0
        for name in variants:
            seconds = b * outs[name].shape[-1] / c.sample_rate
            rows.append(dict(part="code2wav", variant=name, batch=b, unit="s", ref_s=t["ref"],
                             ours_s=t[name], ours_first_s=firsts[name],
                             ref_rate=seconds / t["ref"], ours_rate=seconds / t[name],
                             speedup=t["ref"] / t[name], cpu_speedup=cpu["ref"] / cpu[name],
                             match=-1, steps=args.c2w_frames,
                             ref_rtf=seconds / t["ref"], ours_rtf=seconds / t[name]))
    desc = (f"code2wav: {c.num_layers} layers width {c.hidden_size}, decoder_dim "
            f"{c.decoder_dim}, {cw.total_upsampling(c)} samples/frame at {c.sample_rate} Hz; "
            f"{args.c2w_frames} frames in chunks of {args.c2w_chunk} with {args.c2w_context} "
            f"frames of left context; RTF = audio seconds (all rows) per compute second")
    return rows, desc


def main(argv=None) -> dict:
    args = parse(argv)
    threads = bench_thinker.setup_threads(args.threads)
    import jax
    import torch

    global decoders
    if args.decoders:
        decoders = DECODERS[args.decoders]
    JIT_OPTIONS.clear()
    JIT_OPTIONS.update(bench_thinker.jit_options(args.fast_compile) or {})

    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    for p in parts:
        if p not in PARTS:
            raise SystemExit(f"--parts: unknown part {p!r}; expected some of {PARTS}")
    batches = [int(x) for x in args.batches.split(",") if x.strip()]
    rows, descs = [], []
    pair = None
    if "thinker" in parts or "code2wav" in parts:
        size = "tiny" if args.size == "tiny" else "small"
        pair = bench_thinker.build_pair(size, args.layers, args.seed, audio_output=True,
                                        overrides=c2w_overrides(args.size))
    if "thinker" in parts:
        r, d = bench_thinker_decode(args, batches, pair)
        rows += r
        descs.append(d)
    if "moshi" in parts:
        r, d = bench_moshi(args, batches)
        rows += r
        descs.append(d)
    if "musicgen" in parts:
        r, d = bench_musicgen(args, batches)
        rows += r
        descs.append(d)
    if "code2wav" in parts:
        r, d = bench_code2wav(args, batches, pair)
        rows += r
        descs.append(d)

    print(f"decode, greedy, fp32 CPU, {threads}; torch "
          f"{torch.__version__}, jax {jax.__version__}; median of "
          f"{args.repeats} alternating runs")
    print(f"  ours: {decoders.name}")
    for d in descs:
        print("  " + d)
    head = (f"{'part':<26}{'B':>3}{'reference':>12}{'ours':>12}{'ours 1st':>10}"
            f"{'ref rate':>15}{'ours rate':>15}{'speed-up':>10}{'CPU-time':>10}{'match':>8}"
            f"{'RTF ref':>9}"
            f"{'RTF ours':>9}")
    print(head)
    print("-" * len(head))
    for r in rows:
        label = r["part"] + (f" ({r['variant']})" if "variant" in r else "")
        rate = "{:>9.0f} tok/s" if r["unit"] == "tok" else "{:>9.2f}   s/s"
        rtf = (f"{r['ref_rtf']:>9.2f}{r['ours_rtf']:>9.2f}" if "ours_rtf" in r else "")
        match = f"{r['match']}/{r['steps']}" if r["match"] >= 0 else "-"
        print(f"{label:<26}{r['batch']:>3}{r['ref_s'] * 1e3:>9.1f} ms{r['ours_s'] * 1e3:>9.1f} ms"
              f"{r['ours_first_s']:>8.1f} s" + rate.format(r["ref_rate"]) +
              rate.format(r["ours_rate"]) + f"{r['speedup']:>9.2f}x{r['cpu_speedup']:>9.2f}x"
              f"{match:>8}{rtf}")
    for r in rows:
        if r.get("hbm_fraction") is not None:
            print(f"HBM roofline, {r['part']} B={r['batch']}: {100 * r['hbm_fraction']:.1f}% "
                  f"of {bench_train.hbm_bandwidth()[1] / 1e12:.2f} TB/s (goal at B=1: >= 70%)")
    print("rate: generated tokens/s (code2wav: audio seconds/s); speed-up = reference wall "
          "time / ours (goal >= 3x); CPU-time = the same ratio of process CPU seconds (robust to "
          "other load); match = leading greedy steps identical in every row; 1st = first "
          "call (compiles)")
    results = {"args": vars(args), "pinning": threads, "descriptions": descs, "rows": rows,
               "decoders": decoders.name, "jax": jax.__version__, "torch": torch.__version__}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
