"""Thinker-Talker family (Qwen3-Omni): AuT + Thinker, and the Talker + Code2Wav speech output.

Family contract (`audiolm.models.family.Family`): `build`, `init_params`, `describe_params`,
`example_batch`, and `rules` registered with `audiolm.config.register_rules`.

Params tree: {"aut": ..., "thinker": ..., "talker": ..., "code2wav": ...} (the last two only
with `model.enable_audio_output`), the layout `audiolm.importers.qwen3_omni.load_pretrained`
returns; plus "ctc_head" (trained here, not in released checkpoints) only when
`model.aut.ctc_frames_per_token` > 0.

Training batch: the data pipeline's (`audiolm.data.batching`): audio [B, N] f32, audio_mask
[B, N] bool, text [B, L] i32 ([bos, ids..., eos] then pad), text_mask [B, L] bool.
`asr_sequence` lays out the speech-recognition input [audio_start, audio x n, audio_end, text]
in jnp (n AuT tokens per clip); the loss on it is the `asr` task's (`audiolm.tasks.asr`). Text ids and the Thinker's eos / pad ids are the
tokenizer's; audio_token_id, audio_start_token_id and audio_end_token_id sit above them.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from audiolm import config as config_lib
from audiolm.audio import features as features_lib
from audiolm.config import (check_bool, check_choice, check_float, check_int, check_keys,
                            check_optional_bool, check_schema, get_path, require, spec_schema)
from audiolm.models import aut as aut_lib
from audiolm.models import code2wav as code2wav_lib
from audiolm.models import talker as talker_lib
from audiolm.models import thinker as thinker_lib
from audiolm.nn import moe as moe_lib
from audiolm.presets.thinker_talker_specs import AudioSpec, ThinkerTalkerSpec

FAMILY = "thinker_talker"

# Section schemas, derived from the component specs (each field declared once, with its comment,
# in `audiolm.presets.thinker_talker_specs`).
AUDIO_SCHEMA = spec_schema(AudioSpec)
AUT_SCHEMA = spec_schema(aut_lib.AuTSpec)
THINKER_SCHEMA = spec_schema(thinker_lib.ThinkerSpec)
THINKER_TOKEN_IDS = ("audio_token_id", "audio_start_token_id", "audio_end_token_id",
                     "eos_token_id", "pad_token_id")
# config.model's keys; talker, code2wav and codec_frame_rate only with enable_audio_output.
MODEL_KEYS = tuple(spec_schema(ThinkerTalkerSpec))


# ---------------------------------------------------------------------------------------------
# Rules.


def _validate_audio(config: Any) -> None:
    check_schema(config, "model.audio", AUDIO_SCHEMA)
    sr = check_int(config, "model.audio.sample_rate", lo=1)
    n_fft = check_int(config, "model.audio.n_fft", lo=2)
    check_int(config, "model.audio.hop_length", lo=1, hi=n_fft)
    check_int(config, "model.audio.n_mels", lo=1)
    f_min = check_float(config, "model.audio.f_min", lo=0.0)
    check_float(config, "model.audio.f_max", lo=f_min, lo_open=True, hi=sr / 2)


def _validate_aut(config: Any) -> None:
    p = "model.aut"
    # ctc_frames_per_token is optional: imported configs have no CTC head.
    has_ctc = "ctc_frames_per_token" in get_path(config, p)
    check_schema(config, p, {k: v for k, v in AUT_SCHEMA.items()
                             if has_ctc or k != "ctc_frames_per_token"})
    if has_ctc:
        check_int(config, f"{p}.ctc_frames_per_token", lo=0, hi=16)
    width = check_int(config, f"{p}.hidden_size", lo=4)
    require(width % 2 == 0, f"{p}.hidden_size", width,
            "must be even (sinusoidal positions are [sin, cos] halves)")
    check_int(config, f"{p}.num_layers", lo=1)
    heads = check_int(config, f"{p}.num_heads", lo=1)
    require(width % heads == 0, f"{p}.num_heads", heads,
            f"must divide {p}.hidden_size={width}")
    check_int(config, f"{p}.ffn_hidden", lo=1)
    check_int(config, f"{p}.conv_channels", lo=1)
    chunk = check_int(config, f"{p}.chunk_frames", lo=1)
    window = check_int(config, f"{p}.attention_window_frames", lo=1)
    require(window % chunk == 0, f"{p}.attention_window_frames", window,
            f"must be a multiple of {p}.chunk_frames={chunk} (windows are whole chunks)")
    check_float(config, f"{p}.norm_eps", lo=0.0, lo_open=True)
    check_int(config, f"{p}.max_frames", lo=1)
    check_optional_bool(config, f"{p}.use_dot_product_attention")
    out = check_int(config, f"{p}.output_dim", lo=1)
    thinker_width = get_path(config, "model.thinker.hidden_size")
    require(out == thinker_width, f"{p}.output_dim", out,
            f"must equal model.thinker.hidden_size={thinker_width}: AuT embeddings replace "
            "Thinker token embeddings")


def _validate_thinker(config: Any) -> None:
    p = "model.thinker"
    check_schema(config, p, THINKER_SCHEMA)
    vocab = check_int(config, f"{p}.vocab_size", lo=1)
    check_int(config, f"{p}.hidden_size", lo=1)
    layers = check_int(config, f"{p}.num_layers", lo=1)
    heads = check_int(config, f"{p}.num_heads", lo=1)
    kv = check_int(config, f"{p}.num_kv_heads", lo=1)
    require(heads % kv == 0, f"{p}.num_kv_heads", kv,
            f"must divide {p}.num_heads={heads} (each kv head serves a group of q heads)")
    head_dim = check_int(config, f"{p}.head_dim", lo=2)
    require(head_dim % 2 == 0, f"{p}.head_dim", head_dim, "must be even (RoPE rotates pairs)")
    check_int(config, f"{p}.ffn_hidden", lo=1)
    check_int(config, f"{p}.moe_hidden", lo=1)
    experts = check_int(config, f"{p}.num_experts", lo=0)
    if experts > 0:
        check_int(config, f"{p}.num_experts_per_tok", lo=1)
        top_k = get_path(config, f"{p}.num_experts_per_tok")
        require(top_k <= experts, f"{p}.num_experts_per_tok", top_k,
                f"must be <= {p}.num_experts={experts}")
    else:
        check_int(config, f"{p}.num_experts_per_tok", lo=0)
    check_bool(config, f"{p}.norm_topk_prob")
    check_int(config, f"{p}.decoder_sparse_step", lo=1)
    only = get_path(config, f"{p}.mlp_only_layers")
    for i, layer in enumerate(only):
        require(isinstance(layer, int) and not isinstance(layer, bool) and 0 <= layer < layers,
                f"{p}.mlp_only_layers[{i}]", layer,
                f"must be a layer index in [0, {p}.num_layers={layers})")
    require(len(set(only)) == len(only), f"{p}.mlp_only_layers", tuple(only),
            "must not repeat a layer")
    check_float(config, f"{p}.rope_theta", lo=1.0, lo_open=True)
    check_float(config, f"{p}.rms_norm_eps", lo=0.0, lo_open=True)
    check_bool(config, f"{p}.tie_embeddings")
    seen: dict[int, str] = {}
    for key in THINKER_TOKEN_IDS:
        value = check_int(config, f"{p}.{key}", lo=0, hi=vocab - 1)
        # pad may reuse eos (pad positions are never targets); the others must be distinct.
        clash = seen.get(value)
        require(clash is None or {clash, key} == {"eos_token_id", "pad_token_id"},
                f"{p}.{key}", value,
                f"must differ from {p}.{clash} (special token ids are distinct)")
        seen.setdefault(value, key)
    check_choice(config, f"{p}.moe_dispatch", moe_lib.DISPATCHES)
    check_float(config, f"{p}.moe_capacity_factor", lo=0.0, lo_open=True)
    check_optional_bool(config, f"{p}.use_dot_product_attention")
    check_int(config, f"{p}.max_seq_len", lo=2)


def _validate_sequence(config: Any) -> None:
    """The static batch layout: every audio token of aut.max_frames fits in max_seq_len."""
    max_len = get_path(config, "model.thinker.max_seq_len")
    n_audio = aut_lib.num_audio_tokens(get_path(config, "model.aut.max_frames"),
                                       get_path(config, "model.aut.chunk_frames"))
    require(max_len >= n_audio + 4, "model.thinker.max_seq_len", max_len,
            f"must hold the {n_audio} audio tokens of model.aut.max_frames plus "
            "audio_start, audio_end, one text token and eos")


def _validate_speech_output(config: Any) -> None:
    talker_lib.validate_talker(config, "model.talker")
    code2wav_lib.validate_code2wav(config, "model.code2wav")
    code2wav_lib.validate_codebook_sync(config, "model.talker", "model.code2wav")
    thinker_width = get_path(config, "model.thinker.hidden_size")
    tw = get_path(config, "model.talker.thinker_hidden_size")
    require(tw == thinker_width, "model.talker.thinker_hidden_size", tw,
            f"must equal model.thinker.hidden_size={thinker_width}: the Talker projections "
            "read Thinker embeddings and hidden states")
    layers = get_path(config, "model.thinker.num_layers")
    accept = get_path(config, "model.talker.accept_hidden_layer")
    require(accept <= layers, "model.talker.accept_hidden_layer", accept,
            f"must be <= model.thinker.num_layers={layers} (0 = the Thinker input embeddings)")
    rate = check_float(config, "model.codec_frame_rate", lo=0.0, lo_open=True)
    c2w = get_path(config, "model.code2wav")
    hop = code2wav_lib.total_upsampling(c2w)
    expected = c2w.sample_rate / rate
    require(abs(hop - expected) < 1e-6 * max(1.0, expected), "model.code2wav.upsample_rates",
            tuple(c2w.upsample_rates),
            f"total upsampling prod(upsampling_ratios={tuple(c2w.upsampling_ratios)}) * "
            f"prod(upsample_rates) = {hop} must equal model.code2wav.sample_rate / "
            f"model.codec_frame_rate = {c2w.sample_rate} / {rate} = {expected:g} samples per "
            "codec frame")


PROMPT_PROJECTIONS = ("text", "hidden")
SPEECH_PROMPT_KEYS = ("tts_bos_token_id", "tts_eos_token_id", "tts_pad_token_id", "speaker_id")


def check_speech_prompt(config: Any, required: bool = False
                        ) -> tuple[dict[str, int], tuple[int, ...], str]:
    """The Talker prompt's ids in `config.sample.extra` (presets give them all:
    `audiolm.presets.thinker_talker.speech_prompt`): tts_* ids in the Thinker vocabulary,
    speaker_id in the codec vocabulary, speaker_ids (voices) codec ids in
    [codebook_size, vocab_size), prompt_projection. Returns (ids, voices, projection).

    Validation (`required=False`, from `rules`) checks the kind of each given entry: ints >= 0,
    a list of voices, a known projection. Speech output (`required=True`) needs every id and
    checks it against the vocabularies of the model it samples (a run that swaps in another
    model, e.g. an import, may train with the preset's ids). ConfigError naming the field."""
    extra = config.sample.get("extra", {}) if "sample" in config else {}
    th, tk = config.model.thinker, config.model.talker
    vals = {}
    for key in SPEECH_PROMPT_KEYS:
        hi, where = ((tk.vocab_size, "model.talker.vocab_size") if key == "speaker_id"
                     else (th.vocab_size, "model.thinker.vocab_size"))
        if key not in extra and not required:
            continue
        v = extra.get(key, None)
        ok = isinstance(v, int) and not isinstance(v, bool) and v >= 0
        require(ok and (v < hi or not required), f"sample.extra.{key}", v,
                f"speech output needs an int id in [0, {where}={hi}) (the Talker prompt's "
                "special tokens)")
        vals[key] = v
    voices = extra.get("speaker_ids", ())
    require(isinstance(voices, (list, tuple)), "sample.extra.speaker_ids", voices,
            "must be a list of codec ids")
    for i, v in enumerate(voices):
        ok = isinstance(v, int) and not isinstance(v, bool) and v >= 0
        require(ok and (tk.codebook_size <= v < tk.vocab_size or not required),
                f"sample.extra.speaker_ids[{i}]", v,
                f"a voice is a codec id in [model.talker.codebook_size={tk.codebook_size}, "
                f"model.talker.vocab_size={tk.vocab_size})")
    projection = extra.get("prompt_projection", "text")
    require(projection in PROMPT_PROJECTIONS, "sample.extra.prompt_projection", projection,
            f"must be one of {list(PROMPT_PROJECTIONS)}")
    return vals, tuple(voices), projection


def rules(config: Any) -> None:
    """Every field of `config.model` for the thinker_talker family (and the Talker prompt's ids
    in `config.sample.extra`, checked here so a bad id stops the run before training)."""
    model = get_path(config, "model")
    required = ["family", "enable_audio_output", "audio", "aut", "thinker"]
    enabled = model.get("enable_audio_output", None)
    if enabled:
        required += ["talker", "code2wav", "codec_frame_rate"]
    check_keys(config, "model", MODEL_KEYS, required=required)
    check_bool(config, "model.enable_audio_output")
    _validate_audio(config)
    check_schema(config, "model.thinker", THINKER_SCHEMA)
    if "data" in config:  # first: a vocab below the tokenizer's ids is named as such
        from audiolm import data as data_lib  # the tokenizer's ids come from config.data

        data_lib.check_text_ids(
            config, "model.thinker.vocab_size",
            tuple(f"model.thinker.{k}" for k in THINKER_TOKEN_IDS[:3]),
            "model.thinker.eos_token_id", "model.thinker.pad_token_id")
    _validate_thinker(config)
    _validate_aut(config)
    _validate_sequence(config)
    if enabled or "talker" in model or "code2wav" in model:
        # Speech-output sections present but disabled are still checked: they must stay loadable.
        if "talker" in model and "code2wav" in model and "codec_frame_rate" in model:
            _validate_speech_output(config)
        else:
            for key in ("talker", "code2wav", "codec_frame_rate"):
                require(key in model, f"model.{key}", None,
                        "is missing: model.talker, model.code2wav and model.codec_frame_rate "
                        "come together")
        check_speech_prompt(config)


config_lib.register_rules(FAMILY, rules)


# ---------------------------------------------------------------------------------------------
# Model.


class ThinkerTalker(nn.Module):
    """AuT + Thinker (+ Talker + Code2Wav). Submodules: `aut`, `thinker`, `talker`, `code2wav`.

    `__call__(tokens [B, T], features [B, F, n_mels] | None, frame_lengths [B] | None,
    positions [B, T] | None, caches | None, return_hidden_states=False)` runs AuT and the
    Thinker (with KV caches from `module.thinker.init_caches` for decoding) and returns
    the Thinker's output dict (logits, aux, optional hidden_states) plus "audio_embeds" and
    "audio_mask" when features are given, and "ctc_logits" [B, N * r, vocab] / "ctc_mask"
    [B, N * r] when the optional `ctc_head` exists (`model.aut.ctc_frames_per_token` = r > 0).
    The speech-output parts are applied as submodules
    (`module.talker`, `module.code2wav` with params["talker"], params["code2wav"]; see
    `audiolm.sample.thinker_talker`).
    """
    aut: aut_lib.AuT
    thinker: thinker_lib.Thinker
    talker: Any = None
    code2wav: Any = None
    ctc_head: Any = None

    def __call__(self, tokens, features=None, frame_lengths=None, positions=None,
                 caches=None, return_hidden_states: bool = False):
        audio_embeds = audio_mask = audio_lengths = None
        if features is not None:
            if frame_lengths is None:
                frame_lengths = jnp.full((features.shape[0],), features.shape[1], jnp.int32)
            audio_lengths = None if isinstance(frame_lengths, jax.core.Tracer) else \
                aut_lib.num_audio_tokens(np.asarray(frame_lengths), self.aut.chunk_frames)
        # Bad ids / placeholder counts raise here, before the audio encoder runs.
        thinker_lib.check_tokens(tokens, self.thinker.vocab_size, self.thinker.audio_token_id,
                                 audio_lengths)
        if features is not None:
            audio_embeds, audio_mask = self.aut(features, frame_lengths)
        out = self.thinker(tokens, positions, audio_embeds=audio_embeds,
                           audio_lengths=audio_lengths, caches=caches,
                           return_hidden_states=return_hidden_states)
        if features is not None:
            out["audio_embeds"] = audio_embeds
            out["audio_mask"] = audio_mask
            if self.ctc_head is not None:
                out["ctc_logits"], out["ctc_mask"] = self.ctc_head(audio_embeds, audio_mask)
        return out


def build(model_config: Any, dtype: Any = jnp.float32) -> ThinkerTalker:
    """The family's flax module (validate the experiment config first): every part is built
    from its spec, read from its section once here."""
    talker = code2wav = None
    if model_config.enable_audio_output:
        talker = talker_lib.build(model_config.talker, dtype=dtype)
        code2wav = code2wav_lib.build(model_config.code2wav, dtype=dtype)
    return _speech_input(model_config, dtype).clone(talker=talker, code2wav=code2wav)


def _speech_input(model_config: Any, dtype: Any = jnp.float32) -> ThinkerTalker:
    """AuT + Thinker (+ the optional CTC head): the part `ThinkerTalker.__call__` runs."""
    aut = aut_lib.build(model_config, dtype)
    thinker = thinker_lib.build(model_config, dtype)
    return ThinkerTalker(aut=aut, thinker=thinker,
                         ctc_head=aut_lib.ctc_head(aut.config, thinker.config.vocab_size, dtype))


def _init_inputs(model_config: Any, batch_size: int = 1):
    a = model_config.aut
    frames = a.chunk_frames + 1  # one full chunk and a remainder: every code path
    n_audio = aut_lib.num_audio_tokens(frames, a.chunk_frames)
    tokens = np.zeros((batch_size, n_audio + 2), np.int32)
    tokens[:, 1:1 + n_audio] = model_config.thinker.audio_token_id
    feats = np.zeros((batch_size, frames, model_config.audio.n_mels), np.float32)
    return jnp.asarray(tokens), jnp.asarray(feats), jnp.full((batch_size,), frames, jnp.int32)


def init_params(model_config: Any, rng: jax.Array) -> Any:
    """Plain params pytree {"aut", "thinker"[, "talker", "code2wav"]} for `model_config`.

    The Talker and Code2Wav are initialised by their own modules' `init_params`; their trees
    sit under the names of the `talker` / `code2wav` submodules of `ThinkerTalker`.
    """
    return jax.jit(lambda r: _init_params(model_config, r))(rng)


def _init_params(model_config: Any, rng: jax.Array) -> Any:
    from flax.core import meta

    rng_main, rng_talker, rng_c2w = jax.random.split(rng, 3)
    module = _speech_input(model_config)
    tokens, feats, lengths = _init_inputs(model_config)
    params = dict(meta.unbox(module.init(rng_main, tokens, feats, lengths)["params"]))
    if model_config.enable_audio_output:
        params["talker"] = talker_lib.init_params(model_config.talker, rng_talker)
        params["code2wav"] = code2wav_lib.init_params(model_config.code2wav, rng_c2w)
    return params


# ---------------------------------------------------------------------------------------------
# describe


_ROUTED = ("wi_gate", "wi_up", "wo")


def _counts(shapes: Any, top_k: int, experts: int) -> dict[str, int]:
    def routed(path):
        return top_k / experts if experts and path and path[-1] in _ROUTED else 1.0

    def embedding(path):
        return "embed_tokens" in path or any("embedding" in p for p in path)

    return config_lib.count_params(shapes, routed=routed, embedding=embedding)


def describe_params(model_config: Any) -> dict[str, dict[str, int]]:
    """Per-component parameter counts via `jax.eval_shape` (nothing allocated).

    Components: aut, thinker (embeddings + decoder + lm_head); ctc_head when configured; with
    speech output also talker (projections + MoE decoder + codec_head), talker_code_predictor,
    code2wav.
    """
    shapes = jax.eval_shape(lambda r: init_params(model_config, r), jax.random.PRNGKey(0))
    th = model_config.thinker
    out = {
        "aut": _counts(shapes["aut"], 0, 0),
        "thinker": _counts(shapes["thinker"], th.num_experts_per_tok, th.num_experts),
    }
    if "ctc_head" in shapes:
        out["ctc_head"] = _counts(shapes["ctc_head"], 0, 0)
    if model_config.enable_audio_output:
        tk = model_config.talker
        talker = dict(shapes["talker"])
        cp = talker.pop("code_predictor")
        out["talker"] = _counts(talker, tk.num_experts_per_tok, tk.num_experts)
        out["talker_code_predictor"] = _counts(cp, 0, 0)
        out["code2wav"] = _counts(shapes["code2wav"], 0, 0)
    return out


# ---------------------------------------------------------------------------------------------
# Batches and loss.


def audio_token_count(model_config: Any, audio_lengths) -> Any:
    """AuT tokens (= audio_token_id placeholders) for clips of `audio_lengths` samples."""
    frames = features_lib.num_frames(audio_lengths, model_config.audio.hop_length)
    return aut_lib.num_audio_tokens(frames, model_config.aut.chunk_frames)


def asr_sequence(model_config: Any, audio_lengths: jax.Array, text: jax.Array,
                 text_mask: jax.Array, num_samples: int) -> tuple[jax.Array, jax.Array]:
    """Thinker input of the speech-recognition task (jnp, static shapes).

    Row b: [audio_start, audio_token_id x n_b, audio_end, text_b (bos ... eos), pad ...] with
    n_b = audio_token_count(audio_lengths[b]). `text` [B, L] / `text_mask` [B, L] are the data
    pipeline's ([bos, ids..., eos] then pad). Returns tokens [B, T] int32 and target_mask
    [B, T] float32 (1 on the text after bos, eos included), T = n_max + 2 + L with n_max the
    token count of `num_samples` samples (the padded audio length).
    """
    th = model_config.thinker
    b, l_text = text.shape
    n_max = int(audio_token_count(model_config, int(num_samples)))
    t_len = n_max + 2 + l_text
    n = audio_token_count(model_config, jnp.asarray(audio_lengths, jnp.int32))[:, None]
    idx = jnp.arange(t_len)[None, :]
    j = idx - (n + 2)  # index into the text
    in_text = (j >= 0) & (j < l_text)
    jc = jnp.clip(j, 0, l_text - 1)
    text_tok = jnp.take_along_axis(jnp.asarray(text, jnp.int32), jc, axis=1)
    text_ok = jnp.take_along_axis(jnp.asarray(text_mask, bool), jc, axis=1) & in_text
    tokens = jnp.full((b, t_len), th.pad_token_id, jnp.int32)
    tokens = jnp.where(text_ok, text_tok, tokens)
    tokens = jnp.where((idx >= 1) & (idx <= n), th.audio_token_id, tokens)
    tokens = jnp.where(idx == 0, th.audio_start_token_id, tokens)
    tokens = jnp.where(idx == n + 1, th.audio_end_token_id, tokens)
    target = (text_ok & (j >= 1)).astype(jnp.float32)
    return tokens, target


def asr_prompt(model_config: Any, num_samples: int, bos_id: int) -> np.ndarray:
    """Decoding prompt for one clip: [audio_start, audio x n, audio_end, bos] (numpy int32)."""
    th = model_config.thinker
    n = int(audio_token_count(model_config, int(num_samples)))
    return np.asarray([th.audio_start_token_id] + [th.audio_token_id] * n
                      + [th.audio_end_token_id, bos_id], np.int32)


def example_batch(model_config: Any, batch_size: int, rng: np.random.Generator) -> dict:
    """A random, learnable batch in the data pipeline's layout (`audiolm.data.batching`):
    audio [B, S] f32 (S = aut.max_frames * hop_length), audio_mask [B, S] bool,
    text [B, L] i32 ([bos, ids..., eos] then pad; L fills thinker.max_seq_len), text_mask [B, L].
    bos is eos_token_id - 1 when that is free, else 1 (the data tokenizers' convention)."""
    a, th = model_config.aut, model_config.thinker
    hop = model_config.audio.hop_length
    samples = a.max_frames * hop
    l_text = th.max_seq_len - int(audio_token_count(model_config, samples)) - 2
    lengths = rng.integers(max(hop * 2, samples // 2), samples + 1, size=batch_size)
    t = np.arange(samples) / model_config.audio.sample_rate
    specials = {getattr(th, k) for k in THINKER_TOKEN_IDS}
    bos = th.eos_token_id - 1 if th.eos_token_id >= 1 and th.eos_token_id - 1 not in specials \
        else 1
    ordinary = np.array([i for i in range(th.vocab_size) if i not in specials | {bos}])
    batch = {"audio": np.zeros((batch_size, samples), np.float32),
             "audio_mask": np.zeros((batch_size, samples), bool),
             "text": np.full((batch_size, l_text), th.pad_token_id, np.int32),
             "text_mask": np.zeros((batch_size, l_text), bool)}
    for b in range(batch_size):
        freq = rng.uniform(100.0, 1000.0)
        wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(samples)
        batch["audio"][b, :lengths[b]] = wave[:lengths[b]]
        batch["audio_mask"][b, :lengths[b]] = True
        # A counting run through the ordinary ids from a random start: learnable in a few
        # steps (next id = previous + 1), so loss-decrease checks mean something.
        n = int(rng.integers(max(1, (l_text - 2) // 2), max(2, l_text - 1)))
        start = int(rng.integers(0, len(ordinary)))
        ids = [bos] + ordinary[(start + np.arange(n)) % len(ordinary)].tolist() + [
            th.eos_token_id]
        batch["text"][b, :len(ids)] = ids
        batch["text_mask"][b, :len(ids)] = True
    return batch


def features_from_batch(model_config: Any, batch: dict) -> tuple[jax.Array, jax.Array]:
    """Log-mel features [B, F, n_mels] and frame lengths [B] of a batch's audio (in jnp)."""
    lengths = jnp.sum(jnp.asarray(batch["audio_mask"]), axis=1).astype(jnp.int32)
    return features_lib.log_mel_from_config(batch["audio"], model_config.audio, lengths=lengths)
