"""Thinker-Talker (Qwen3-Omni) generation: Thinker text, then Talker codec frames -> Code2Wav.

Text (`TextSampler`): prompts are left-padded [B, P] with a mask; positions count the real
tokens (cumsum(mask) - 1, pads at -1 are invisible keys), so a padded row decodes exactly as
it would alone. Prefill (AuT features merged at the audio placeholders) fills a preallocated KV
cache of P + max_new_tokens slots; decoding runs in `lax.while_loop`, one token per step,
sampled with `rules.sample_logits` (greedy at temperature 0), each row stopping at its own EOS
(`rules.stop_after_eos`: pad after it) and the loop ending when every row has.

Speech (`SpeechSampler`, needs `model.enable_audio_output`): the Talker input follows
transformers' `Qwen3OmniMoeForConditionalGeneration.generate` without the chat-template role
markers: the prompt projected (hidden_projection of the Thinker's `accept_hidden_layer` state at
audio positions, text_projection of the Thinker embeddings elsewhere), then the assistant head
[tts_pad x 4, tts_bos, first text token] (text_projection) + codec embeddings [nothink,
think_bos, think_eos, speaker, codec_pad, codec_bos]. Each Talker step samples codebook 0 from
`codec_head` (special ids other than codec_eos masked), the code predictor the other codebooks,
and the next input is the sum of the frame's code embeddings plus the next "trailing" text
entry (the projected generated text, then tts_eos, then tts_pad). A row stops at codec_eos.
`stream` yields waveform chunks as frames come (`code2wav.stream_step`); `generate` runs the
same step in a `lax.while_loop`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from audiolm.config import ConfigError
from audiolm.models import code2wav as c2w_lib
from audiolm.models import talker as talker_lib
from audiolm.models import thinker_talker as family
from audiolm.nn.compile import fast_jit
from audiolm.sample import rules


def left_pad(prompts, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """List of 1-D int prompts -> (tokens [B, P] left-padded with pad_id, mask [B, P] bool)."""
    prompts = [np.asarray(p, np.int32).reshape(-1) for p in prompts]
    if not prompts or min(len(p) for p in prompts) < 1:
        raise ValueError("prompts must be a non-empty list of non-empty token sequences")
    width = max(len(p) for p in prompts)
    tokens = np.full((len(prompts), width), pad_id, np.int32)
    mask = np.zeros((len(prompts), width), bool)
    for i, p in enumerate(prompts):
        tokens[i, width - len(p):] = p
        mask[i, width - len(p):] = True
    return tokens, mask


def positions_from_mask(mask):
    """[B, P] bool -> int32 positions: real tokens count 0, 1, ...; pads are -1 (invisible)."""
    mask = jnp.asarray(mask, bool)
    return jnp.where(mask, jnp.cumsum(mask, axis=1) - 1, -1).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class TextOptions:
    max_new_tokens: int = 32
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0  # 1.0: no nucleus filter
    eos_id: int | None = None  # None: never stop early
    pad_id: int = 0


class TextSampler:
    """Compiled Thinker generation for one module and `TextOptions` (one compile per shape).

    generate(params, tokens [B, P], mask [B, P], rng, features=None [B, F, n_mels],
    frame_lengths=None [B]) -> dict(tokens [B, max_new_tokens] (pad after a row's EOS),
    lengths [B] generated tokens incl. EOS, done [B], steps (loop iterations run)).
    """

    def __init__(self, module: family.ThinkerTalker, options: TextOptions,
                 fast_compile: bool = False):
        if options.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={options.max_new_tokens} must be >= 1")
        self.module, self.options = module, options
        # Temperature, EOS and pad ids are traced: samplers differing only in them share one
        # compiled loop (per module, max_new_tokens, top_k, top_p and input shapes).
        key = (module, options.max_new_tokens, options.top_k, options.top_p, fast_compile)
        if key not in _TEXT_RUNS:
            jit = fast_jit if fast_compile else jax.jit  # fast: short runs, compile dominates
            _TEXT_RUNS[key] = jit(functools.partial(_text_impl, *key[:4]))
        self._run = _TEXT_RUNS[key]

    def generate(self, params, tokens, mask, rng, features=None, frame_lengths=None):
        tokens = np.asarray(tokens, np.int32)
        mask = np.asarray(mask, bool)
        if tokens.ndim != 2 or mask.shape != tokens.shape:
            raise ValueError(f"tokens {tokens.shape} and mask {mask.shape} must both be [B, P]")
        if not mask[:, -1].all():
            raise ValueError("prompts must be left-padded: mask[:, -1] must be True in every row")
        th = self.module.thinker
        audio_lengths = None
        if features is not None:
            frame_lengths = (np.full((tokens.shape[0],), features.shape[1], np.int32)
                             if frame_lengths is None else np.asarray(frame_lengths, np.int32))
            from audiolm.models import aut as aut_lib

            audio_lengths = aut_lib.num_audio_tokens(frame_lengths, self.module.aut.chunk_frames)
        from audiolm.models import thinker as thinker_lib

        thinker_lib.check_tokens(tokens, th.vocab_size, th.audio_token_id, audio_lengths)
        o = self.options
        dyn = (jnp.float32(o.temperature), jnp.int32(-1 if o.eos_id is None else o.eos_id),
               jnp.int32(o.pad_id))
        return self._run(params, tokens, mask, rng, features, frame_lengths, *dyn)


_TEXT_RUNS: dict = {}


def _text_impl(module, n, top_k, top_p, params, tokens, mask, rng, features, frame_lengths,
               temperature, eos, pad):
    """The Thinker decode loop (see TextSampler); n, top_k, top_p static."""
    b, p = tokens.shape
    caches = module.thinker.init_caches(b, p + n)
    pos = positions_from_mask(mask)
    out = module.apply({"params": params}, tokens, features, frame_lengths, pos, caches)

    def cond(s):
        return (s["i"] < n) & ~jnp.all(s["done"])

    def body(s):
        rng, key = jax.random.split(s["rng"])
        tok = rules.sample_logits(s["logits"], key, temperature, top_k, top_p)
        tok, done = rules.stop_after_eos(tok, s["done"], eos, pad)
        length = s["lengths"] + (~s["done"]).astype(jnp.int32)
        res = module.apply({"params": params}, tok[:, None], None, None, s["pos"][:, None],
                           s["caches"])
        return dict(i=s["i"] + 1, rng=rng, logits=res["logits"][:, -1],
                    caches=res["caches"], pos=s["pos"] + 1, done=done, lengths=length,
                    tokens=s["tokens"].at[:, s["i"]].set(tok))

    state = dict(i=jnp.zeros((), jnp.int32), rng=rng, logits=out["logits"][:, -1],
                 caches=out["caches"], pos=pos[:, -1] + 1, done=jnp.zeros((b,), bool),
                 lengths=jnp.zeros((b,), jnp.int32),
                 tokens=jnp.full((b, n), pad, jnp.int32))
    s = jax.lax.while_loop(cond, body, state)
    return {"tokens": s["tokens"], "lengths": s["lengths"], "done": s["done"],
            "steps": s["i"]}


# ---------------------------------------------------------------------------------------------
# Speech: Talker -> code predictor -> Code2Wav.


@dataclasses.dataclass(frozen=True)
class SpeechOptions:
    """Token ids of the Talker prompt (Thinker vocabulary: tts_*; codec vocabulary: speaker) and
    the codec sampling settings."""
    tts_bos_id: int
    tts_eos_id: int
    tts_pad_id: int
    speaker_id: int
    max_frames: int = 32
    temperature: float = 0.0
    top_k: int = 0
    # Talker inputs at the prompt's text positions: "text" (text_projection of the Thinker's
    # embeddings, Qwen3-Omni's rule) or "hidden" (hidden_projection of the Thinker's
    # accept_hidden_layer state, the rule of audio positions, which always take it).
    prompt_projection: str = "text"
    speaker_ids: tuple[int, ...] = ()  # codec ids of the selectable voices (voice v = [v])


PROMPT_PROJECTIONS = family.PROMPT_PROJECTIONS


def speech_options_from_config(config) -> SpeechOptions:
    """`SpeechOptions` from `config.sample.extra` (presets give every id:
    `audiolm.presets.thinker_talker.speech_prompt`); ConfigError naming a bad field."""
    extra = config.sample.get("extra", {})
    vals, voices, projection = family.check_speech_prompt(config, required=True)
    return SpeechOptions(vals["tts_bos_token_id"], vals["tts_eos_token_id"],
                         vals["tts_pad_token_id"], vals["speaker_id"],
                         max_frames=int(extra.get("max_frames", config.sample.max_new_tokens)),
                         temperature=float(extra.get("codec_temperature",
                                                     config.sample.temperature)),
                         top_k=int(extra.get("codec_top_k", config.sample.top_k)),
                         prompt_projection=projection, speaker_ids=voices)


def talker_inputs(module: family.ThinkerTalker, params, options: SpeechOptions, tokens, mask,
                  text, text_lengths, speakers, features=None, frame_lengths=None) -> dict:
    """The Talker's conditioning from the Thinker (jnp, traceable): the one implementation of
    the prompt layout, used by `SpeechSampler` and by the tts training loss
    (`audiolm.tasks.tts_thinker_talker`).

    tokens / mask [B, P] the Thinker prompt (left- or right-padded: positions count the real
    tokens), text [B, N] the text to speak (entries from text_lengths [B] on are ignored),
    speakers [B] int32 codec ids of the voices. Returns dict(
      prefill [B, P + 6, D]: the projected prompt (hidden_projection of the Thinker's
        accept_hidden_layer state at audio positions, and at text positions when
        options.prompt_projection == "hidden"; text_projection of the Thinker's embeddings
        otherwise), then the head [tts_pad x 4, tts_bos, text[:, 0]] (text_projection) +
        codec embeddings [nothink, think_bos, think_eos, speaker, codec_pad, codec_bos];
      prefill_mask [B, P + 6] bool;
      trailing [B, N + 1, D]: added to the Talker input after frame j (j >= N: the last entry):
        text[:, j + 1] while j + 1 < text_lengths, tts_eos at j + 1 == text_lengths, then tts_pad;
      thinker: the Thinker's output dict (logits, aux, hidden_states)).
    """
    th, talker = module.thinker, module.talker
    cfg = talker.config

    def t(*args, method):
        return talker.apply({"params": params["talker"]}, *args, method=method)

    b = tokens.shape[0]
    out = module.apply({"params": params}, tokens, features, frame_lengths,
                       positions_from_mask(mask), return_hidden_states=True)
    embeds = out["hidden_states"][0]
    hidden = out["hidden_states"][cfg.accept_hidden_layer]
    use_hidden = tokens == th.audio_token_id
    if options.prompt_projection == "hidden":
        use_hidden = jnp.ones_like(use_hidden)
    user = jnp.where(use_hidden[..., None], t(hidden, method=talker_lib.Talker.project_hidden),
                     t(embeds, method=talker_lib.Talker.project_text))
    table = params["thinker"]["embed_tokens"]["embedding"]
    emb = lambda ids: jnp.take(table, ids, axis=0)  # the Thinker's token embeddings
    o = options
    special = t(emb(jnp.array([[o.tts_bos_id, o.tts_eos_id, o.tts_pad_id]])),
                method=talker_lib.Talker.project_text)[0]
    bos_e, eos_e, pad_e = special[0], special[1], special[2]
    d = pad_e.shape[-1]
    text_e = t(emb(text), method=talker_lib.Talker.project_text)  # [B, N, D]
    head_text = jnp.concatenate([jnp.broadcast_to(pad_e, (b, 4, d)),
                                 jnp.broadcast_to(bos_e, (b, 1, d)), text_e[:, :1]], axis=1)
    fixed = lambda i: jnp.full((b,), i, jnp.int32)
    codec_ids = jnp.stack([fixed(cfg.codec_nothink_id), fixed(cfg.codec_think_bos_id),
                           fixed(cfg.codec_think_eos_id), jnp.asarray(speakers, jnp.int32),
                           fixed(cfg.codec_pad_id), fixed(cfg.codec_bos_id)], axis=1)
    head = head_text + t(codec_ids, method=talker_lib.Talker.embed_codec)
    prefill = jnp.concatenate([user, head], axis=1)
    prefill_mask = jnp.concatenate([jnp.asarray(mask, bool), jnp.ones((b, head.shape[1]), bool)],
                                   axis=1)
    n = text.shape[1]
    j = jnp.arange(n)[None, :]
    lengths = jnp.asarray(text_lengths)[:, None]
    trailing = jnp.concatenate([text_e[:, 1:], jnp.zeros_like(text_e[:, :1])], axis=1)
    trailing = jnp.where((j + 1 < lengths)[..., None], trailing,
                         jnp.where((j + 1 == lengths)[..., None], eos_e, pad_e))
    trailing = jnp.concatenate([trailing, jnp.broadcast_to(pad_e, (b, 1, d))],
                               axis=1)  # the last entry repeats for every later step
    return dict(prefill=prefill, prefill_mask=prefill_mask, trailing=trailing, thinker=out)


class SpeechSampler:
    """Talker + code predictor frames and their waveform (see the module docstring).

    prepare(params, tokens, mask, text, text_lengths, features, frame_lengths) -> talker state
    (one jitted Thinker forward + Talker prefill); run / step / generate / stream make frames
    with one compiled `lax.while_loop` (`_run_impl`); stream decodes them to waveform chunks
    as they come.
    """

    def __init__(self, module: family.ThinkerTalker, options: SpeechOptions,
                 fast_compile: bool = False):
        if module.talker is None:
            raise ValueError("model.enable_audio_output=False: this model has no Talker")
        self.module, self.options = module, options
        self.talker = module.talker
        self.cfg = self.talker.config
        self.fast_compile = fast_compile
        jit = fast_jit if fast_compile else jax.jit
        self._prepare = jit(self._prepare_impl)
        self._run = jit(self._run_impl)

    # -- talker prompt --------------------------------------------------------------------

    def _t(self, params, *args, method):
        return self.talker.apply({"params": params["talker"]}, *args, method=method)

    def _prepare_impl(self, params, tokens, mask, text, text_lengths, speakers, features,
                      frame_lengths):
        o = self.options
        b = tokens.shape[0]
        if speakers is None:
            speakers = jnp.full((b,), o.speaker_id, jnp.int32)
        inputs = talker_inputs(self.module, params, o, tokens, mask, text, text_lengths,
                               speakers, features, frame_lengths)
        prefill, prefill_mask = inputs["prefill"], inputs["prefill_mask"]
        caches = self.talker.init_caches(b, prefill.shape[1] + o.max_frames)
        tpos = positions_from_mask(prefill_mask)
        res = self._t(params, prefill, tpos, caches, method=talker_lib.Talker.decode)
        return dict(hidden=res["hidden"][:, -1], logits=res["logits"][:, -1],
                    caches=res["caches"], pos=tpos[:, -1] + 1, step=jnp.zeros((), jnp.int32),
                    trailing=inputs["trailing"], done=jnp.zeros((b,), bool))

    def _step_impl(self, params, s, rng):
        o, cfg = self.options, self.cfg
        k0, k1 = jax.random.split(rng)
        logits = talker_lib.mask_codec_logits(s["logits"], cfg)
        sample = functools.partial(rules.sample_logits, temperature=o.temperature, top_k=o.top_k)
        code0 = sample(logits, k0)
        ended = code0 == cfg.codec_eos_id
        valid = ~(s["done"] | ended)
        safe0 = jnp.where(valid, code0, 0)  # EOS / finished rows: a placeholder audio code
        codes, nxt = self._t(params, s["hidden"], safe0, k1, sample,
                             method=talker_lib.Talker.predict_frame)
        last = s["trailing"].shape[1] - 1
        nxt = nxt + s["trailing"][:, jnp.minimum(s["step"], last)]
        res = self._t(params, nxt[:, None], s["pos"][:, None], s["caches"],
                      method=talker_lib.Talker.decode)
        state = dict(s, hidden=res["hidden"][:, -1], logits=res["logits"][:, -1],
                     caches=res["caches"], pos=s["pos"] + 1, step=s["step"] + 1,
                     done=s["done"] | ended)
        return state, codes, valid

    def _run_impl(self, params, s, rng, limit):
        """Up to `limit` (traced) more frames in a `lax.while_loop`, stopping when every row
        ended. One compile serves `generate` (limit = max_frames), `stream` (limit = chunk)
        and `step` (limit = 1); the PRNG chain continues across calls (rng split per frame).
        Returns (state, rng, codes [B, G, max_frames], valid [B, max_frames], frames made)."""
        b = s["done"].shape[0]
        g, n = self.cfg.num_codebooks, self.options.max_frames

        def cond(c):
            return (c["i"] < jnp.minimum(limit, n)) & ~jnp.all(c["s"]["done"])

        def body(c):
            rng, key = jax.random.split(c["rng"])
            st, codes, valid = self._step_impl(params, c["s"], key)
            return dict(i=c["i"] + 1, rng=rng, s=st,
                        codes=c["codes"].at[:, :, c["i"]].set(jnp.where(valid[:, None], codes, 0)),
                        valid=c["valid"].at[:, c["i"]].set(valid))

        init = dict(i=jnp.zeros((), jnp.int32), rng=rng, s=s,
                    codes=jnp.zeros((b, g, n), jnp.int32), valid=jnp.zeros((b, n), bool))
        c = jax.lax.while_loop(cond, body, init)
        return c["s"], c["rng"], c["codes"], c["valid"], c["i"]

    # -- public ---------------------------------------------------------------------------

    def prepare(self, params, tokens, mask, text, text_lengths, features=None,
                frame_lengths=None, speakers=None):
        """Talker state after the prefill. tokens/mask [B, P] the (left-padded) prompt, text
        [B, N] the text to speak (EOS and after excluded by text_lengths [B] >= 1), speakers
        [B] codec ids of each row's voice (None: options.speaker_id for every row)."""
        text_lengths = np.asarray(text_lengths, np.int32)
        if (text_lengths < 1).any():
            raise ValueError(f"text_lengths {text_lengths.tolist()}: every row needs >= 1 text "
                             "token to speak")
        if features is not None and frame_lengths is None:
            frame_lengths = np.full((tokens.shape[0],), features.shape[1], np.int32)
        if speakers is not None:
            speakers = np.asarray(speakers, np.int32)
            talker_lib.check_ids(speakers, self.cfg.vocab_size, "speakers")
            if speakers.shape != (tokens.shape[0],):
                raise ValueError(f"speakers: shape {speakers.shape} must be [B={tokens.shape[0]}]")
            speakers = jnp.asarray(speakers)
        return self._prepare(params, jnp.asarray(tokens, jnp.int32), jnp.asarray(mask, bool),
                             jnp.asarray(text, jnp.int32), jnp.asarray(text_lengths),
                             speakers, features, frame_lengths)

    def run(self, params, state, rng, limit: int):
        """(state, rng, codes [B, G, n], valid [B, n]) for the next n <= limit frames."""
        state, rng, codes, valid, n = self._run(params, state, rng, jnp.int32(limit))
        n = int(n)
        return state, rng, np.asarray(codes)[:, :, :n], np.asarray(valid)[:, :n]

    def step(self, params, state, rng):
        """One frame: (state, rng, codes [B, G], valid [B]); valid is False for ended rows (and
        every row once all ended: then no frame was made and codes are 0)."""
        state, rng, codes, valid = self.run(params, state, rng, 1)
        if codes.shape[2] == 0:
            b, g = valid.shape[0], self.cfg.num_codebooks
            return state, rng, np.zeros((b, g), np.int32), np.zeros((b,), bool)
        return state, rng, codes[:, :, 0], valid[:, 0]

    def generate(self, params, state, rng):
        """Every frame (up to max_frames) in one call -> dict(codes [B, G, n], valid [B, n],
        frames [B] valid frames per row)."""
        _, _, codes, valid = self.run(params, state, rng, self.options.max_frames)
        return {"codes": codes, "valid": valid, "frames": valid.sum(axis=1)}

    def stream(self, params, state, rng, chunk: int = 4, left_context: int | None = None
               ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yields (waveform chunk [B, samples], codes [B, G, n], valid [B, n]) every `chunk`
        frames (n = chunk but for the last), decoded by Code2Wav `stream_step` as they come;
        the same frames as `generate` with the same rng. Frames of ended rows decode code 0:
        cut each row at its frame count."""
        if chunk < 1:
            raise ValueError(f"chunk={chunk} must be >= 1")
        c2w = self.module.code2wav
        wav_state = c2w_lib.init_stream(c2w.config, int(state["done"].shape[0]))
        made = 0
        while made < self.options.max_frames:
            state, rng, codes, valid = self.run(params, state, rng,
                                                min(chunk, self.options.max_frames - made))
            if codes.shape[2] == 0:
                return
            made += codes.shape[2]
            wav_state, wav = c2w_lib.stream_step(c2w, params["code2wav"], wav_state, codes,
                                                 left_context, self.fast_compile)
            yield np.asarray(wav), codes, valid


def _prompts(config, n: int):
    """(audio [n, S] f32, lengths [n], reference texts) from the validation split of
    config.data, or the family's example batch when data.name is 'synthetic'."""
    m = config.model
    if config.data.name == "synthetic":
        batch = family.example_batch(m, n, np.random.default_rng(int(config.sample.seed)))
        lengths = batch["audio_mask"].sum(axis=1)
        return batch["audio"], lengths, [None] * n
    from audiolm import data as data_lib

    ds = data_lib.make_dataset(config.data, "validation")
    if len(ds) == 0:
        raise ValueError("sample: the validation split of config.data is empty")
    idx = [i % len(ds) for i in range(n)]
    clips = [ds.audio(i) for i in idx]
    width = max(len(c) for c in clips)
    audio = np.zeros((n, width), np.float32)
    for i, c in enumerate(clips):
        audio[i, :len(c)] = c
    return audio, np.array([len(c) for c in clips]), [ds.text(i) for i in idx]


def write_samples(module: family.ThinkerTalker, params, config, workdir: str) -> dict:
    """Speech recognition samples: `sample.num_samples` clips -> Thinker transcripts
    (`transcripts.jsonl`: ids, text, reference), `tokens.npz` (text ids and lengths; codec
    codes with audio output) and, when model.enable_audio_output, `speech_<i>.wav` through
    the Talker and streaming Code2Wav. Returns a summary dict."""
    import soundfile as sf

    from audiolm.audio import features as features_lib

    m, s = config.model, config.sample
    n = int(s.num_samples)
    audio, lengths, refs = _prompts(config, n)
    feats, frames = features_lib.log_mel_from_config(audio, m.audio, lengths=lengths)
    feats, frames = np.asarray(feats), np.asarray(frames, np.int32)
    tokenizer = None
    th = m.thinker
    specials = {getattr(th, k) for k in family.THINKER_TOKEN_IDS}
    # The synthetic batches' bos (family.example_batch): eos - 1 when free, else 1.
    bos = th.eos_token_id - 1 if th.eos_token_id >= 1 and th.eos_token_id - 1 not in specials \
        else 1
    if config.data.name != "synthetic":
        from audiolm import data as data_lib

        tokenizer = data_lib.make_tokenizer(config.data)
        bos = tokenizer.bos_id
    prompts = [family.asr_prompt(m, int(length), bos) for length in lengths]
    tokens, mask = left_pad(prompts, m.thinker.pad_token_id)
    options = TextOptions(max_new_tokens=int(s.max_new_tokens), temperature=float(s.temperature),
                          top_k=int(s.top_k), top_p=float(s.top_p),
                          eos_id=m.thinker.eos_token_id, pad_id=m.thinker.pad_token_id)
    rng = jax.random.PRNGKey(int(s.seed))
    out = TextSampler(module, options, fast_compile=True).generate(
        params, tokens, mask, rng, feats, frames)
    text, lengths_out = np.asarray(out["tokens"]), np.asarray(out["lengths"])
    folder = os.path.join(workdir, "samples")
    os.makedirs(folder, exist_ok=True)
    arrays = {"text": text, "text_lengths": lengths_out, "prompt": tokens, "prompt_mask": mask}
    with open(os.path.join(folder, "transcripts.jsonl"), "w") as f:
        for i in range(n):
            ids = [int(t) for t in text[i, :lengths_out[i]] if t != m.thinker.eos_token_id]
            row = {"index": i, "ids": ids, "reference": refs[i]}
            if tokenizer is not None:
                row["text"] = tokenizer.decode(ids)
            f.write(json.dumps(row) + "\n")
    summary = {"family": "thinker_talker", "num_samples": n,
               "text_tokens": lengths_out.tolist(), "files": ["transcripts.jsonl", "tokens.npz"]}
    if m.enable_audio_output:
        sp = SpeechSampler(module, speech_options_from_config(config), fast_compile=True)
        spoken = np.maximum(lengths_out - np.asarray(out["done"], np.int32), 1)
        state = sp.prepare(params, tokens, mask, text, spoken, feats, frames)
        key = jax.random.fold_in(rng, 1)
        pieces = list(sp.stream(params, state, key))
        if not pieces:
            raise ValueError("the Talker ended every row before its first frame "
                             "(codec_eos first): no speech to write")
        wav = np.concatenate([p[0] for p in pieces], axis=1)
        codes = np.concatenate([p[1] for p in pieces], axis=2)
        n_frames = np.concatenate([p[2] for p in pieces], axis=1).sum(axis=1)
        hop, trim = c2w_lib.total_upsampling(m.code2wav), c2w_lib.start_trim(m.code2wav)
        for i in range(n):
            keep = max(int(n_frames[i]) * hop - trim, 0)
            sf.write(os.path.join(folder, f"speech_{i}.wav"), wav[i, :keep],
                     int(m.code2wav.sample_rate))
            summary["files"].append(f"speech_{i}.wav")
        arrays.update(codes=codes, frames=n_frames)
        summary["speech_frames"] = n_frames.tolist()
    np.savez(os.path.join(folder, "tokens.npz"), **arrays)
    with open(os.path.join(folder, "thinker_talker_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary
