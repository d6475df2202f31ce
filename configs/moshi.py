"""Kyutai temporal + depth transformer experiments (Moshi, Hibiki, Kyutai STT/TTS).

Launch (tiny, CPU; trains on synthetic example batches):
  python -m audiolm.main --config=configs/moshi.py:variant=tiny --workdir=/tmp/moshi_tiny
Describe a published variant (parameters, bytes, FLOPs; nothing is allocated):
  python -m audiolm.main --config=configs/moshi.py:variant=moshi_7b_202409 --mode=describe
Slices of the streaming v0.1 model are an arg:
  python -m audiolm.main --config=configs/moshi.py:variant=v0_1_streaming,slices=16 --mode=describe
An official Kyutai config file (Python JSON or Rust/server TOML):
  python -m audiolm.main --config=configs/moshi.py:file=/path/to/moshi_7b_202409.json --mode=describe

Speech tasks on the codes of the speech codec (train the codec first:
`python -m audiolm.main --config=configs/codec.py:variant=speech --workdir=runs/codec_speech`):
  text-to-speech, text leading (`audiolm.tasks.tts_moshi`; judged by the "speech" evaluator):
    python -m audiolm.main --config=configs/moshi.py:variant=tts_speech --workdir=runs/moshi_tts
  speech-to-text, audio leading (`audiolm.tasks.stt`; test CER and streaming delay), on the
  codes of the istft-decoder speech codec (train it first, README "Codec"):
    python -m audiolm.main --config=configs/moshi.py:variant=stt_speech --workdir=runs/moshi_stt
  `tts_tiny` / `stt_tiny`: the same on a random tiny codec and a tiny speech set (tests).

arg: variant=<preset of audiolm.presets.moshi | tts_speech | stt_speech | tts_tiny | stt_tiny>,
slices=<n> (v0_1_streaming), fusion=<add | concat | cross_attention | interleave> (tiny only),
file=<official Kyutai JSON/TOML config>, codec_workdir=<the speech codec's workdir> (tts / stt;
default: runs/codec_speech for tts, runs/codec_istft for stt, whose codec config is
configs/codec.py:variant=speech,decoder=istft; '' = a random codec),
steps=<n> (tts / stt; 0 = the variant's).
`audiolm.presets.moshi` documents every field of `config.model`; the task is "codes" (tts / stt
for the speech variants).
"""

from __future__ import annotations

import ml_collections

from audiolm import data as data_lib
from audiolm.config import spec_to_section
from audiolm.importers import moshi as kyutai_files
from audiolm.presets import experiment
from audiolm.presets import moshi as presets
from audiolm.presets.moshi_specs import DepformerSpec, MoshiSpec, TemporalSpec
from audiolm.tasks import speech_codes

# Variants on the codec codes of the speech set (the tiny ones on a random tiny codec).
TASK_VARIANTS = ("tts_speech", "stt_speech", "tts_tiny", "stt_tiny")


def train_loss() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        text_weight=1.0,  # weight of the text cross-entropy
        audio_weight=1.0,  # weight of the mean audio cross-entropy over depformer slices
        semantic_weight=1.0,  # extra factor on the first audio codebook (Kyutai used 100)
    ))


def speech_model(task: str, tiny: bool, num_codebooks: int, card: int, vocab: int,
                 num_speakers: int) -> ml_collections.ConfigDict:
    """`config.model` of a speech variant. Text ids: the tokenizer's `vocab` ids, then PAD,
    EPAD (predicted), then the initial id. tts: text leading (the first codebook delayed 1 frame
    at 125 Hz tiny / 2 at 25 Hz speech, the others one more), a depformer over every codebook,
    the speaker profile as a lut; stt: the text 3 (tiny) / 10 (speech, 0.4 s) frames behind the audio,
    no depformer."""
    tts = task == "tts"
    if tiny:
        temporal = TemporalSpec(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=4,
                                ffn_hidden=64, context=64, rope_theta=10000.0)
        depformer = DepformerSpec(num_slices=num_codebooks, hidden_size=16, num_layers=1,
                                  num_heads=2, ffn_hidden=32)
    elif tts:  # sized for ~0.35 s per step of 16 x 4 s on 2 CPU cores (~35 GFLOP)
        temporal = TemporalSpec(hidden_size=192, num_layers=5, num_heads=6, num_kv_heads=6,
                                ffn_hidden=512, context=150, rope_theta=10000.0)
        depformer = DepformerSpec(num_slices=num_codebooks, hidden_size=96, num_layers=1,
                                  num_heads=4, ffn_hidden=256)
    else:  # the same budget without a depformer: a wider temporal transformer
        temporal = TemporalSpec(hidden_size=256, num_layers=4, num_heads=8, num_kv_heads=8,
                                ffn_hidden=704, context=150, rope_theta=10000.0)
        depformer = presets.NO_DEPFORMER
    if tts:
        lead = 1 if tiny else 2  # frames of text before its audio (a word's tokens may push
        # the next word up to ~2 frames past its espeak start at 25 Hz)
        delays = (0,) + tuple(lead if q == 0 else lead + 1 for q in range(num_codebooks))
        conditioners = {"speaker": presets.lut(num_speakers, 16 if tiny else 64)}
    else:
        delays = (3 if tiny else 10,) + (0,) * num_codebooks
        depformer, conditioners = presets.NO_DEPFORMER, {}
    return spec_to_section(MoshiSpec(
        text_in_vocab_size=vocab + 3, text_out_vocab_size=vocab + 2, audio_vocab_size=card + 1,
        audio_codebooks=num_codebooks, delays=delays, temporal=temporal, depformer=depformer,
        text_padding_id=vocab, text_end_padding_id=vocab + 1, conditioners=conditioners))


def speech_config(config: ml_collections.ConfigDict, variant: str, codec_workdir: str,
                  steps: int) -> ml_collections.ConfigDict:
    """tts / stt on the codec codes of the espeak set (module docstring)."""
    task, tiny = variant.split("_")[0], variant.endswith("_tiny")
    data = config.data
    data.name = "speech_synth"
    data.max_audio_seconds = 6.0
    data.bucket_seconds = (2.0, 3.0, 4.0)  # padded lengths 2, 3, 4, 6 s: four compiles
    if tiny:
        data.update(num_train=16, num_validation=4, num_test=4, num_speakers=4, batch_size=8)
        config.task.codec = speech_codes.codec_section("configs/codec.py:variant=tiny", 2)
    else:
        data.batch_size = 16
        # stt reads the codes of the istft-decoder codec: its encoder trained 3000 steps in the
        # same 30 minutes as the SEANet codec's 700 (test CER 0.141 -> 0.063, README)
        codec = "configs/codec.py:variant=speech" + (",decoder=istft" if task == "stt" else "")
        if codec_workdir == "default":
            codec_workdir = "runs/codec_istft" if task == "stt" else "runs/codec_speech"
        config.task.codec = speech_codes.codec_section(
            codec, 4 if task == "tts" else 8, workdir=codec_workdir)
    config.model = speech_model(task, tiny, config.task.codec.num_codebooks,
                                speech_codes.codec_spec(config).quantizer.codebook_size,
                                data_lib.make_tokenizer(data).vocab_size, data.num_speakers)
    config.task.name = task
    config.train.loss = train_loss()
    if task == "tts":
        config.task.evaluators = ("loss",)
        config.task.final_evaluators = () if tiny else ("speech",)
        config.sample.temperature = 0.8
        config.sample.top_k = 50
        config.sample.extra.text_temperature = 0.7
        config.sample.extra.text_top_k = 3  # PAD, EPAD or a word token: the timing decision
        config.sample.max_new_tokens = 24 if tiny else 200  # steps (frames + delay) per sentence
        config.sample.num_samples = 4
    else:
        config.train.loss.audio_weight = 0.0  # no depformer: text only
        config.train.loss.audio_time_masks = 0  # SpecAugment-style time masks on the codes
        config.train.loss.audio_time_width = 0
        if not tiny:
            # The stt recipe (README "Speech output": each lever measured at 2400 steps on the
            # SEANet codec's codes, test CER 0.83 (600 steps, the old recipe) -> 0.78 -> 0.19
            # -> 0.18; the recipe on the istft codec's codes 0.063):
            # the main job's set, half its training sentences scrambled, so the text cannot be
            # completed from the templates;
            data.update(num_train=6000, train_scrambled=0.5)
            # the audio embeddings start as a linear view of the codec's quantized latent
            # (eval loss at 1000 steps 0.65 -> 0.14);
            config.task.codec.init_embeddings = True
            # time masks on the codes: 2 spans of up to 5 frames (0.2 s).
            config.train.loss.audio_time_masks = 2
            config.train.loss.audio_time_width = 5
        config.task.evaluators = ("loss",)
        config.task.final_evaluators = ("stt_cer",)
    config.train.learning_rate = 1e-3 if not tiny else 3e-3
    config.train.warmup_steps = 5 if tiny else 100
    config.train.steps = steps or (30 if tiny else 4800 if task == "stt" else 2000)
    config.train.log_every = 5 if tiny else 25
    config.train.eval_every = 15 if tiny else 250
    config.train.eval_steps = 1 if tiny else 8
    config.train.checkpoint_every = 15 if tiny else 250
    return config


def get_config(arg=None):
    arg = experiment.parse_arg(arg, variant="tiny", slices=8, fusion="add", file="",
                               codec_workdir="default", steps=0)
    config = experiment.base_config()
    if arg.variant in TASK_VARIANTS and not arg.file:
        config.sample.extra.text_temperature = 0.7
        config.sample.extra.text_top_k = 25
        return speech_config(config, arg.variant, arg.codec_workdir, arg.steps)
    if arg.file:
        loaded = kyutai_files.load_config_file(arg.file)
        config.model = loaded.model
        config.sample.extra = loaded.sample_extra
    elif arg.variant not in presets.PRESETS:
        raise ValueError(f"config arg variant={arg.variant!r}: expected one of "
                         f"{sorted(presets.PRESETS) + list(TASK_VARIANTS)}")
    elif arg.variant == "v0_1_streaming":
        config.model = presets.v0_1_streaming(arg.slices)
    elif arg.variant == "tiny":
        config.model = presets.tiny(arg.fusion)
    else:
        config.model = presets.PRESETS[arg.variant]()
    # No Kyutai-format dataset ships with audiolm yet: train on the family's example batches.
    config.data.name = "synthetic"
    config.task.name = "codes"
    config.train.loss = train_loss()
    config.sample.temperature = 0.8  # audio temperature (Kyutai default)
    config.sample.top_k = 250  # audio top-k
    if "text_temperature" not in config.sample.extra:
        config.sample.extra.text_temperature = 0.7
        config.sample.extra.text_top_k = 25
    if arg.variant == "tiny" and not arg.file:
        config.train.steps = 50
        config.train.warmup_steps = 5
    return config


# Sweeps (experiments/sweep.py --sweep=NAME): plain functions yielding config overrides.


def sweep_lr():
    """Peak learning rate, e.g.
    python experiments/sweep.py --config=configs/moshi.py:tiny --sweep=lr --workdir=runs/moshi_lr"""
    for lr in (1e-4, 3e-4, 1e-3, 3e-3):
        yield {"train.learning_rate": lr}


def sweep_semantic_weight():
    """Extra weight of the first (semantic) audio codebook (Kyutai trained with 100)."""
    for weight in (1.0, 10.0, 100.0):
        yield {"train.loss.semantic_weight": weight}
