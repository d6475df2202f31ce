"""Thinker-Talker experiments (Qwen3-Omni style): AuT audio encoder, MoE Thinker, Talker, Code2Wav.

Launch the main job (tiny AuT + Thinker speech recogniser on the embedded espeak data, CPU):
  python -m audiolm.main --config=configs/thinker_talker.py:variant=tiny_asr --workdir=/tmp/asr
Other variants:
  python -m audiolm.main --config=configs/thinker_talker.py:variant=tiny --workdir=/tmp/tt_tiny
  python -m audiolm.main --config=configs/thinker_talker.py:variant=tiny,data=synthetic --workdir=/tmp/tt_syn
  python -m audiolm.main --config=configs/thinker_talker.py:variant=qwen3_omni_30b_a3b --mode=describe
  python -m audiolm.main --config=configs/thinker_talker.py:variant=design_reference --mode=describe

arg: variant=<preset of audiolm.presets.thinker_talker> (tiny | tiny_asr | design_reference |
qwen3_omni_30b_a3b), data=<speech_synth | manifest | synthetic>; without data=, the tiny
variants read the embedded speech set and the published presets (Qwen's text vocabulary, which
no shipped dataset is tokenized with) train on synthetic batches.

The model: `audiolm.presets.thinker_talker` documents every field of `config.model`. The task is
"asr" (speech -> transcript); on speech data the test split is transcribed at the end and scored
(CER). `config.train.loss` (below): text_weight, text_input_noise, ctc_weight (needs
model.aut.ctc_frames_per_token > 0), spec_time_masks / spec_time_width / spec_freq_masks /
spec_freq_width (SpecAugment); the MoE aux weights are train.moe_aux_weight / train.moe_z_weight.
"""

from __future__ import annotations

import ml_collections

from audiolm.presets import experiment
from audiolm.presets import thinker_talker as presets


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


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = experiment.parse_arg(arg, variant="tiny", data="")
    if args.variant not in presets.PRESETS:
        raise ValueError(f"config arg variant={args.variant!r}: expected one of "
                         f"{sorted(presets.PRESETS)}")
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
        config.train.steps = 1200
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
