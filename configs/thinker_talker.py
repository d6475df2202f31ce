"""Thinker-Talker experiments (Qwen3-Omni style): AuT audio encoder, MoE Thinker, Talker, Code2Wav.

Launch the main job (tiny AuT + Thinker speech recogniser on the embedded espeak data, CPU):
  python -m audiolm.main --config=configs/thinker_talker.py:variant=tiny_asr --workdir=/tmp/asr
Other variants:
  python -m audiolm.main --config=configs/thinker_talker.py:variant=tiny --workdir=/tmp/tt_tiny
  python -m audiolm.main --config=configs/thinker_talker.py:variant=tiny,data=synthetic --workdir=/tmp/tt_syn
  python -m audiolm.main --config=configs/thinker_talker.py:variant=qwen3_omni_30b_a3b --mode=describe
  python -m audiolm.main --config=configs/thinker_talker.py:variant=design_reference --mode=describe

Text-to-speech (task "tts", `audiolm.tasks.tts_thinker_talker`: the Talker speaks a transcript
fed from the Thinker, on the codes of the trained speech codec of configs/codec.py:speech):
  python -m audiolm.main --config=configs/thinker_talker.py:variant=tts_speech --workdir=runs/tts_tt
  python -m audiolm.main --config=configs/thinker_talker.py:variant=tts_speech --workdir=runs/tts_tt \
      --mode=sample
  python experiments/tts_stream.py   # streamed chain: first-chunk latency and RTF on CPU

arg: variant=<preset of audiolm.presets.thinker_talker> (tiny | tiny_asr | design_reference |
qwen3_omni_30b_a3b) or a tts variant (`TASK_VARIANTS`: tts_tiny | tts_speech),
codec_workdir=<the trained codec run of tts_speech> (default runs/codec_speech),
data=<speech_synth | manifest | synthetic>; without data=, the tiny
variants read the embedded speech set and the published presets (Qwen's text vocabulary, which
no shipped dataset is tokenized with) train on synthetic batches.

The model: `audiolm.presets.thinker_talker` documents every field of `config.model`. The task is
"asr" (speech -> transcript); on speech data the test split is transcribed at the end and scored
(CER). `config.train.loss` (below): text_weight, text_input_noise, ctc_weight (needs
model.aut.ctc_frames_per_token > 0), spec_time_masks / spec_time_width / spec_freq_masks /
spec_freq_width (SpecAugment); the MoE aux weights are train.moe_aux_weight / train.moe_z_weight.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from audiolm.config import spec_from_section, spec_to_section
from audiolm.presets import codec as codec_presets
from audiolm.presets import experiment
from audiolm.presets import thinker_talker as presets
from audiolm.presets.thinker_talker_specs import TalkerSpec
from audiolm.tasks import speech_codes


def loss_section(text_weight=1.0, text_input_noise=0.0, ctc_weight=0.0, spec_time_masks=0,
                 spec_time_width=0, spec_freq_masks=0, spec_freq_width=0):
    return ml_collections.ConfigDict(dict(
        text_weight=text_weight,  # Thinker next-token cross-entropy
        # training only: probability of replacing each transcript input token by another token
        # of the same transcript (targets unchanged), so the Thinker must read the audio
        text_input_noise=text_input_noise,
        # auxiliary CTC loss (per character) on the AuT's CTC head; > 0 needs
        # model.aut.ctc_frames_per_token > 0
        ctc_weight=ctc_weight,
        # SpecAugment of the training log-mels: spans of up to spec_time_width frames and bands
        # of up to spec_freq_width mel bins set to 0, spec_*_masks of each per utterance
        spec_time_masks=spec_time_masks,
        spec_time_width=spec_time_width,
        spec_freq_masks=spec_freq_masks,
        spec_freq_width=spec_freq_width,
    ))


def tts_loss_section(codebook0_weight=1.0, predictor_weight=1.0, text_weight=0.0,
                     train_thinker=1.0):
    return ml_collections.ConfigDict(dict(
        codebook0_weight=codebook0_weight,  # Talker codec_head CE (codebook 0 and codec_eos)
        predictor_weight=predictor_weight,  # code predictor CE (codebooks 1..K-1)
        text_weight=text_weight,  # Thinker next-token CE on the transcript (0 = none)
        # 1: the Thinker trains with the Talker; 0: frozen (no gradient; needs no weight decay)
        train_thinker=train_thinker,
    ))


def _tts_talker(talker, codebook_size, num_codebooks, num_voices, **sizes):
    """`talker` resized to the task codec's codes: special ids right above the codes, then
    one codec id per voice. Returns (talker, speaker_ids)."""
    first = codebook_size
    ids = dict(codec_pad_id=first, codec_bos_id=first + 1, codec_eos_id=first + 2,
               codec_nothink_id=first + 3, codec_think_bos_id=first + 4,
               codec_think_eos_id=first + 5)
    voices = tuple(range(first + 6, first + 6 + num_voices))
    vocab = -(-(voices[-1] + 1) // 8) * 8
    talker = dataclasses.replace(talker, codebook_size=codebook_size,
                                 num_codebooks=num_codebooks, vocab_size=vocab, **ids, **sizes)
    return talker, voices


def tts_config(variant: str, codec_workdir: str) -> ml_collections.ConfigDict:
    """Text-to-speech on the speech set's codec codes (task "tts", module
    `audiolm.tasks.tts_thinker_talker`): tts_tiny (tests: a random tiny codec, 8 voices, tiny
    sizes) or tts_speech (the 30-minute CPU recipe on the trained speech codec's codes)."""
    config = experiment.base_config()
    config.task.name = "tts"
    config.task.evaluators = ("loss",)
    config.task.final_evaluators = ()
    config.data.name = "speech_synth"
    config.train.loss = tts_loss_section()
    config.train.weight_decay = 0.0  # a frozen Thinker (train_thinker=0) must not decay
    if variant == "tts_tiny":
        codec, k, voices = "configs/codec.py:variant=tiny", 2, 8
        spec = codec_presets.TINY
        base = presets.tiny()
        talker_sizes = {}
        # one 3 s bucket: one compiled step shape; 8 rows split over the tests' 8 fake devices
        config.data.update(num_train=16, num_validation=8, num_test=8, num_speakers=voices,
                           batch_size=8, num_workers=1, max_audio_seconds=3.0,
                           bucket_seconds=(3.0,))
        config.train.update(steps=20, learning_rate=3e-3, warmup_steps=2, log_every=5,
                            eval_every=10, eval_steps=1, checkpoint_every=10)
        config.sample.update(num_samples=2, max_new_tokens=16)
    else:  # tts_speech
        # The speech codec's first 4 codebooks (1 kbps), as the other families' tts_speech.
        codec, k, voices = "configs/codec.py:variant=speech", 4, 64
        spec = codec_presets.SPEECH_16K
        base = presets.tiny_asr()  # the main job's AuT + Thinker sizes
        base.enable_audio_output = True
        talker_sizes = dict(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2,
                            head_dim=32, num_experts=4, num_experts_per_tok=2, moe_hidden=128,
                            shared_expert_hidden=256, projection_hidden=128,
                            code_predictor=dataclasses.replace(
                                presets.TINY_TALKER.code_predictor, hidden_size=128,
                                num_layers=2, head_dim=32, ffn_hidden=256))
        config.data.update(num_speakers=voices, batch_size=16)
        # 3.6 s a step (batch 16, 3 s bucket) measured on a 2-core VM loaded ~5x: about 0.7 s
        # idle, so 1600 steps, four judged evaluations and the first encoding of the set's
        # codes fit in about 30 minutes.
        config.train.update(steps=1600, learning_rate=1e-3, warmup_steps=100, eval_every=400,
                            checkpoint_every=400, eval_steps=2, log_every=50)
        config.task.evaluators = ("loss", "speech")  # judged WER against training time
        config.task.final_evaluators = ("speech",)
        # the set's longest sentence (3.3 s) is 83 frames at 25 frames/s
        config.sample.update(num_samples=4, max_new_tokens=100)
    talker_spec = spec_from_section(TalkerSpec, {"model": {"talker": base.talker}},
                                    "model.talker")
    talker, speaker_ids = _tts_talker(talker_spec, spec.quantizer.codebook_size, k, voices,
                                      **talker_sizes)
    base.talker = spec_to_section(talker)
    base.code2wav.update(codebook_size=spec.quantizer.codebook_size, num_codebooks=k)
    config.model = base
    config.task.codec = speech_codes.codec_section(codec, k, workdir=codec_workdir)
    config.sample.temperature = 0.8
    config.sample.top_k = 50
    config.sample.extra.update(presets.speech_prompt("tiny"))
    config.sample.extra.update(speaker_ids=speaker_ids, speaker_id=speaker_ids[0],
                               prompt_projection="hidden")
    return config


TASK_VARIANTS = ("tts_tiny", "tts_speech")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = experiment.parse_arg(arg, variant="tiny", data="", codec_workdir="runs/codec_speech")
    if args.variant in TASK_VARIANTS:
        return tts_config(args.variant, "" if args.variant == "tts_tiny" else args.codec_workdir)
    if args.variant not in presets.PRESETS:
        raise ValueError(f"config arg variant={args.variant!r}: expected one of "
                         f"{sorted(presets.PRESETS) + list(TASK_VARIANTS)}")
    config = experiment.base_config()
    config.model = presets.PRESETS[args.variant]()
    config.data.name = args.data or ("speech_synth" if args.variant.startswith("tiny")
                                     else "synthetic")
    config.task.name = "asr"
    # CER needs real transcripts: scored on the test split of speech data only.
    config.task.final_evaluators = () if config.data.name == "synthetic" else ("cer",)
    config.train.loss = loss_section()
    # The Talker prompt's ids and voices (--mode=sample speaks with them; override by flags).
    config.sample.extra.update(presets.speech_prompt(args.variant))
    if args.variant == "tiny_asr":
        # Utterances up to aut.max_frames (8 s): the espeak sentences fit, sequences stay short.
        config.data.max_audio_seconds = (config.model.aut.max_frames
                                         * config.model.audio.hop_length
                                         / config.model.audio.sample_rate)
        # The main job (README, "The main job", for its measured time and CER).
        config.data.num_train = 6000
        # Half the training sentences are scrambled lexicon words: the Thinker cannot complete
        # a template from its grammar, it must read the audio (test CER 0.45 -> 0.30 at 1200
        # steps; README "The main job").
        config.data.train_scrambled = 0.5
        config.train.steps = 2400
        config.train.learning_rate = 2e-3
        config.train.warmup_steps = 60
        # Validation and checkpoints every 400 steps: both take time from the 15-minute budget.
        config.train.eval_every = 400
        config.train.checkpoint_every = 400
        # Make the recogniser listen: auxiliary character CTC on the AuT's CTC head
        # (model.aut.ctc_frames_per_token of the preset) and SpecAugment of the log-mels.
        config.train.loss.ctc_weight = 0.5
        config.train.loss.spec_time_masks = 2
        config.train.loss.spec_time_width = 20
        config.train.loss.spec_freq_masks = 2
        config.train.loss.spec_freq_width = 15
        # Test transcripts: joint CTC / attention beam search (the CTC head keeps the Thinker
        # on what was said; test CER 0.096 greedy -> 0.020 on the same 2400-step checkpoint).
        config.task.decode_beam = 4
        config.task.decode_ctc_weight = 0.3
        config.task.decode_candidates = 8
        config.sample.temperature = 0.0  # greedy transcripts
        config.sample.max_new_tokens = 128
    return config


# Sweeps (experiments/sweep.py --sweep=NAME): plain functions yielding config overrides.


def sweep_lr():
    """Peak learning rate of the recogniser, e.g.
    python experiments/sweep.py --config=configs/thinker_talker.py:tiny_asr --sweep=lr \
        --workdir=runs/sweep_lr --metric=test/cer"""
    for lr in (5e-4, 1e-3, 2e-3, 4e-3):
        yield {"train.learning_rate": lr}


def sweep_text_input_noise():
    """How much the Thinker must read the audio: transcript input noise, two seeds."""
    for noise in (0.0, 0.15, 0.3):
        for seed in (0, 1):
            yield {"train.loss.text_input_noise": noise, "seed": seed}
