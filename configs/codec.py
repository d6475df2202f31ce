"""Neural audio codec experiments: causal SEANet encoder + residual VQ + mirror decoder.

Launch (tiny, CPU, synthetic sinusoids; seconds):
  python -m audiolm.main --config=configs/codec.py:variant=tiny --workdir=/tmp/codec_tiny
Train the 2 kbps speech codec on the embedded 16 kHz speech set (generated on first use):
  python -m audiolm.main --config=configs/codec.py:variant=speech --workdir=runs/codec_speech
Original / reconstructed WAV pairs of test utterances from a trained run:
  python -m audiolm.main --config=configs/codec.py:variant=speech --workdir=runs/codec_speech \
      --mode=sample
Decoded by a Code2Wav (Qwen3-Omni's decoder) instead of the SEANet mirror (tiny | speech):
  python -m audiolm.main --config=configs/codec.py:variant=tiny,decoder=code2wav \
      --workdir=/tmp/codec_tiny_c2w
Decoded by a Vocos-style inverse-STFT decoder instead of the SEANet decoder (tiny | speech;
speech: 3000 steps in the same 30 minutes):
  python -m audiolm.main --config=configs/codec.py:variant=speech,decoder=istft \
      --workdir=runs/codec_istft
Describe Kyutai's Mimi (parameters; nothing is allocated):
  python -m audiolm.main --config=configs/codec.py:variant=mimi --mode=describe

Adversarial training (multi-scale STFT discriminator, hinge + feature matching, its own Adam):
  python -m audiolm.main --config=configs/codec.py:variant=speech,adversarial=True \
      --workdir=runs/codec_speech_gan

arg: variant=<preset of audiolm.presets.codec> (tiny | speech | mimi | tiny_mimi), steps=<n>
(0 = the variant's default), adversarial=<bool> (default False: no discriminator).
`audiolm.presets.codec` documents every field of `config.model`;
the task is "codec" (`audiolm.tasks.codec`: the loss weights below). decoder=seanet (default) |
code2wav (tiny, speech: the Code2Wav of `audiolm.presets.codec.CODE2WAV_DECODERS`) | istft (tiny,
speech: `audiolm.presets.codec.ISTFT_DECODERS`).
"""

from __future__ import annotations

import ml_collections

from audiolm.config import spec_to_section
from audiolm.presets import codec as presets
from audiolm.presets import experiment

SYNTHETIC = ("tiny", "tiny_mimi")  # variants trained on the family's synthetic sinusoids


def train_loss(min_n_fft=256, n_mels=64, segment_seconds=1.0):
    return ml_collections.ConfigDict(dict(
        mel_weight=1.0,  # multi-scale log-mel L1
        stft_weight=1.0,  # multi-resolution STFT (spectral convergence + log magnitude)
        commit_weight=0.25,  # ||r - sg(e)||^2: keeps the encoder near its codes (VQ-VAE beta)
        codebook_weight=1.0,  # ||sg(r) - e||^2: moves the codebooks to the residuals
        adv_weight=0.0,  # hinge generator loss against model.discriminator (adversarial=True)
        feat_weight=0.0,  # relative feature-matching L1 on the discriminator's feature maps
        quantizer_dropout=0.5,  # P(a batch decodes a random prefix of codebooks): prefixes decode
        segment_seconds=segment_seconds,  # random training crop per utterance (0 = whole)
        min_n_fft=min_n_fft,  # smallest STFT size of both spectral losses (hop n_fft / 4)
        num_scales=3,  # STFT sizes min_n_fft * 2**k, k < num_scales
        n_mels=n_mels,  # mel bands per scale
    ))


def get_config(arg=None):
    arg = experiment.parse_arg(arg, variant="tiny", steps=0, adversarial=False, decoder="seanet")
    if arg.variant not in presets.PRESETS:
        raise ValueError(f"config arg variant={arg.variant!r}: expected one of "
                         f"{sorted(presets.PRESETS)}")
    config = experiment.base_config()
    config.model = presets.PRESETS[arg.variant]()
    if arg.decoder == "code2wav":  # the preset's Code2Wav (tiny, speech) replaces SEANet's
        config.model = spec_to_section(presets.with_code2wav(presets.SPECS[arg.variant],
                                                             arg.variant))
    elif arg.decoder == "istft":  # the preset's iSTFT decoder (tiny, speech) replaces SEANet's
        config.model = spec_to_section(presets.with_istft(presets.SPECS[arg.variant],
                                                          arg.variant))
    elif arg.decoder != "seanet":
        raise ValueError(f"config arg decoder={arg.decoder!r}: expected 'seanet', 'code2wav' "
                         "or 'istft'")
    rate = int(config.model.sample_rate)
    config.task.name = "codec"
    config.task.evaluators = ("loss", "codec")
    config.task.final_evaluators = ("codec",)
    config.train.weight_decay = 0.0  # the codebooks are params: no pull towards zero
    config.train.learning_rate = 1e-3
    config.train.b2 = 0.99
    config.sample.num_samples = 4  # original / reconstructed pairs written by --mode=sample
    if arg.variant in SYNTHETIC:
        config.data.name = "synthetic"  # family.example_batch: sums of sinusoids
        config.data.batch_size = 4
        config.data.num_validation = 8
        config.data.num_test = 8
        config.train.loss = train_loss(min_n_fft=64, n_mels=32, segment_seconds=0.0)
        config.train.steps = 20
        config.train.warmup_steps = 2
        config.train.log_every = 5
        config.train.eval_every = 10
        config.train.eval_steps = 2
        config.train.checkpoint_every = 10
    else:
        config.data.name = "speech_synth"
        config.data.sample_rate = rate  # the set is generated at the codec's rate
        config.data.batch_size = 8
        config.data.max_audio_seconds = 6.0
        # One padded length: training crops segment_seconds anyway, and one batch shape
        # compiles the train step once.
        config.data.bucket_seconds = (6.0,)
        config.train.loss = train_loss(min_n_fft=256 if rate <= 16000 else 512, n_mels=64)
        # The 30-minute CPU recipe (README, "Codec": 700 steps took 33 min on a shared 2-core
        # VM); more steps keep improving it (steps=<n>).
        config.train.steps = 700
        if arg.decoder == "istft":
            # The same 30-minute budget: an iSTFT step costs ~1/5 of a SEANet one (3000 steps
            # took 27.6 min on the shared 2-core VM; judged WER 0.68 vs 1.11 for seanet's 700).
            config.train.steps = 3000
        config.train.warmup_steps = 100
        config.train.log_every = 25
        config.train.eval_every = 250
        config.train.eval_steps = 4
        config.train.checkpoint_every = 250
    if arg.steps:
        config.train.steps = arg.steps
    if arg.adversarial:
        add_discriminator(config)
    return config


def add_discriminator(config):
    """EnCodec-style adversarial training: three STFT scales around the loss's middle size,
    hinge + feature matching (EnCodec's 1:3 ratio of the two), the discriminator on its own Adam
    (EnCodec's lr 3e-4, betas 0.5 / 0.9)."""
    mid = 2 * int(config.train.loss.min_n_fft)
    config.model.discriminator.n_ffts = (2 * mid, mid, mid // 2)
    config.model.discriminator.filters = 32 if config.data.name != "synthetic" else 8
    config.train.loss.adv_weight = 1.0
    config.train.loss.feat_weight = 3.0
    config.train.param_groups.discriminator = ml_collections.ConfigDict(
        dict(learning_rate=3e-4, b1=0.5, b2=0.9))


# Sweeps (experiments/sweep.py --sweep=NAME): plain functions yielding config overrides.


def sweep_lr():
    """Peak learning rate, e.g.
    python experiments/sweep.py --config=configs/codec.py:tiny --sweep=lr --workdir=runs/codec_lr"""
    for lr in (3e-4, 1e-3, 3e-3):
        yield {"train.learning_rate": lr}


def sweep_quantizer():
    """Codebook learning (`audiolm.presets.codec.QuantizerSpec`): straight-through with the
    codebook loss, against Mimi's EMA codebooks with k-means init and dead-code restarts, with
    the cosine and the Euclidean lookup, e.g.
    python experiments/sweep.py --config=configs/codec.py:speech --sweep=quantizer \
        --workdir=runs/codec_quantizer"""
    for update, lookup in (("loss", True), ("ema", True), ("ema", False)):
        ema = update == "ema"
        yield {"model.quantizer.codebook_update": update, "model.quantizer.normalized_lookup": lookup,
               "model.quantizer.kmeans_init": ema,
               "model.quantizer.dead_code_threshold": 0.1 if ema else 0.0}


def sweep_commitment():
    """Commitment weight of the straight-through RVQ (VQ-VAE beta)."""
    for weight in (0.1, 0.25, 1.0):
        yield {"train.loss.commit_weight": weight}
