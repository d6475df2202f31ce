"""Pattern LM experiments: MusicGen / stable-audio-tools audio LM over interleaved codebooks.

Launch (tiny, CPU, synthetic codes):
  python -m audiolm.main --config=configs/pattern_lm.py:variant=tiny --workdir=/tmp/pattern_lm_tiny
Describe the MusicGen-small-shaped preset (parameters, bytes, FLOPs; nothing is allocated):
  python -m audiolm.main --config=configs/pattern_lm.py:variant=musicgen_small --mode=describe
A stable-audio-tools LM JSON (model_type "lm"):
  python -m audiolm.main --config=configs/pattern_lm.py:file=/path/to/model_config.json --mode=describe
Text-to-speech on the embedded speech set, over the codes of the trained speech codec (train the
codec first: configs/codec.py:variant=speech in runs/codec_speech), then speak and judge:
  python -m audiolm.main --config=configs/pattern_lm.py:variant=tts_speech \
      --workdir=runs/tts_pattern
  python experiments/tts_eval.py --config=configs/pattern_lm.py:variant=tts_speech \
      --workdir=runs/tts_pattern

arg: variant=<preset of audiolm.presets.pattern_lm> (tiny | musicgen_small) or a tts variant
(`TASK_VARIANTS`: tts_tiny | tts_speech), file=<stable-audio-tools LM JSON>, codec_workdir=<the
trained codec run of tts_speech> (default runs/codec_speech). `audiolm.presets.pattern_lm`
documents every field of `config.model`; the presets train the task "codes" on synthetic code
batches, the tts variants the task "tts" (`audiolm.tasks.tts`, `audiolm.tasks.tts_pattern`).
"""

from __future__ import annotations

from audiolm.importers import stable_audio_tools
from audiolm.presets import experiment
from audiolm.presets import pattern_lm as presets
from audiolm.tasks import speech_codes

TASK_VARIANTS = ("tts_tiny", "tts_speech")


def tts_model(num_codebooks, codebook_size, frame_rate, max_frames, num_speakers, text_length,
              lm, cond_dim, text_layers, cfg_dropout=0.1):
    """A pattern LM that speaks: the codec's codebooks + an END code (`tts_pattern`), the
    transcript by cross-attention (byte text encoder), the speaker as a global condition."""
    conds = {
        "text": presets.TextConditionerSpec(max_length=text_length, num_layers=text_layers,
                                            num_heads=max(1, cond_dim // 32),
                                            ffn_hidden=4 * cond_dim),
        "speaker": presets.LookupConditionerSpec(num_classes=num_speakers + 1),
    }
    return presets.model(
        max_frames=max_frames,
        pretransform=presets.CodeSpaceSpec(n_q=num_codebooks, codebook_size=codebook_size + 1,
                                           sample_rate=16000, frame_rate=frame_rate,
                                           name="speech codec + END"),
        lm=lm,
        conditioning=presets.ConditioningSpec(cond_dim, conds, cross_attention_ids=("text",),
                                              global_ids=("speaker",),
                                              project_cross_attention=True,
                                              cfg_dropout=cfg_dropout),
        pattern=presets.PatternSpec("delay"))


def tts_config(config, variant, codec_workdir):
    """The tts task on the speech set: `tts_tiny` (a randomly initialised tiny codec, a tiny
    set; tests) or `tts_speech` (the trained 16 kHz speech codec's first 4 codebooks)."""
    config.task.name = "tts"
    config.data.name = "speech_synth"
    text_length = int(config.data.max_text_len) - 2  # transcripts without bos / eos
    if variant == "tts_tiny":
        # one 3 s bucket (the tiny set's sentences are shorter): one compiled step shape
        # (a batch of 8 splits over the 8 fake devices of the tests)
        config.data.update(num_train=16, num_validation=4, num_test=4, num_speakers=4,
                           batch_size=8, num_workers=1, bucket_seconds=(3.0,))
        config.task.codec = speech_codes.codec_section("configs/codec.py:variant=tiny", 2)
        config.model = tts_model(2, 32, 125.0, 500, 4, text_length,
                                 presets.TransformerSpec(hidden_size=32, num_layers=2,
                                                         num_heads=2, ffn_hidden=64),
                                 cond_dim=16, text_layers=1)
        config.train.update(steps=20, warmup_steps=2, eval_every=10, eval_steps=1,
                            checkpoint_every=10, log_every=5, learning_rate=3e-3)
        config.sample.update(max_new_tokens=12, num_samples=4, cfg_scale=2.0)  # one batch
        return config
    config.task.codec = speech_codes.codec_section("configs/codec.py:variant=speech", 4,
                                                   workdir=codec_workdir)
    # 25 Hz codes: the longest sentence of the set (3.3 s, 83 frames) fits in 100 frames with
    # its END.
    config.model = tts_model(4, 1024, 25.0, 100, int(config.data.num_speakers), text_length,
                             presets.TransformerSpec(hidden_size=192, num_layers=4, num_heads=4,
                                                     ffn_hidden=768),
                             cond_dim=128, text_layers=2)
    config.task.evaluators = ("loss", "speech")  # judged WER against training time
    config.task.final_evaluators = ("speech",)
    # ~0.5 s a step on 2 idle cores (3.8 s measured on a VM loaded 7x): 2000 steps, four
    # judged evaluations and the first encoding of the set's codes in about 30 minutes.
    config.train.update(steps=2000, warmup_steps=200, learning_rate=1e-3, eval_every=500,
                        eval_steps=2, checkpoint_every=500, log_every=50)
    config.sample.update(max_new_tokens=100, num_samples=4, temperature=0.7, top_k=50,
                         cfg_scale=2.0)
    return config


def get_config(arg=None):
    arg = experiment.parse_arg(arg, variant="tiny", file="", codec_workdir="runs/codec_speech")
    config = experiment.base_config()
    if arg.variant in TASK_VARIANTS and not arg.file:
        return tts_config(config, arg.variant, arg.codec_workdir)
    if arg.file:
        config.model = stable_audio_tools.model_config_from_json(arg.file)
    elif arg.variant not in presets.PRESETS:
        raise ValueError(f"config arg variant={arg.variant!r}: expected one of "
                         f"{sorted(presets.PRESETS) + list(TASK_VARIANTS)}")
    else:
        config.model = presets.PRESETS[arg.variant]()
    config.data.name = "synthetic"  # the family's example code batches
    config.task.name = "codes"
    config.sample.temperature = 1.0  # MusicGen default
    config.sample.top_k = 250
    config.sample.cfg_scale = 3.0  # MusicGen default guidance
    if arg.variant == "tiny" and not arg.file:
        config.train.steps = 50
        config.train.warmup_steps = 5
        config.sample.max_new_tokens = 8
    return config


# Sweeps (experiments/sweep.py --sweep=NAME): plain functions yielding config overrides.


def sweep_lr():
    """Peak learning rate, e.g.
    python experiments/sweep.py --config=configs/pattern_lm.py:tiny --sweep=lr \
        --workdir=runs/pattern_lm_lr"""
    for lr in (1e-4, 3e-4, 1e-3, 3e-3):
        yield {"train.learning_rate": lr}


def sweep_pattern():
    """Codebook interleaving pattern (audiolm.patterns) at the same budget."""
    for kind in ("parallel", "delay", "coarse_first", "unroll"):
        yield {"model.pattern.kind": kind}
