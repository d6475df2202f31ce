"""Thinker-Talker streaming speech on CPU: first-chunk latency and real-time factor.

The whole chain, streamed (`audiolm.tasks.tts_thinker_talker.stream`): text -> Thinker ->
Talker -> code predictor -> the codec's streaming decoder, a waveform chunk every `--chunk`
frames. For each config (`--configs`: tts_tiny and tts_speech of configs/thinker_talker.py),
one warm-up call compiles everything (reported as `compile`), then `--repeats` timed calls:

  first chunk   seconds from the call (Thinker prefill included) to the first waveform chunk
  total         seconds to the last chunk
  audio         seconds of audio streamed (frames x hop / sample rate, all rows)
  RTF           total / audio per row (< 1: faster than real time)

Params: the trained run of `--workdir` (its latest checkpoint) when given, else random (the
timing of a random model equals a trained one's for the same frame count; the Talker may stop
at codec_eos earlier, so `frames` is reported). tts_speech uses the trained speech codec of
`--codec_workdir` when it holds a checkpoint, else a random codec of the same sizes.

    python experiments/tts_stream.py
    python experiments/tts_stream.py --configs=tts_speech --workdir=runs/tts_tt --chunk=2

Measured (random params and codecs, `--codec_workdir=/nonexistent`, commit 8669680, a 2-core VM
at load ~3.5, batch 1, median of 3; the first chunk includes the Thinker and Talker prefill):

| config | chunk (frames / ms) | frames | audio s | first chunk s | total s | RTF |
|---|---|---|---|---|---|---|
| tts_speech | 4 / 160 | 50 | 2.00 | 0.420 | 0.801 | 0.40 |
| tts_speech | 1 / 40 | 50 | 2.00 | 0.384 | 1.062 | 0.53 |
| tts_tiny | 4 / 32 | 6 (codec_eos) | 0.05 | 0.341 | 0.346 | 7.20 |

tts_tiny's random Talker ends after 6 frames (48 ms of 125 Hz codes), so its RTF is the prefill's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from audiolm.models import thinker_talker as family  # noqa: E402
from audiolm.presets import codec as codec_presets  # noqa: E402
from audiolm.presets.experiment import load_experiment_config  # noqa: E402
from audiolm.tasks import speech_codes  # noqa: E402
from audiolm.tasks import tts_thinker_talker as tts  # noqa: E402

TEXTS = ["the quick brown fox jumps over the lazy dog", "she sells sea shells by the shore"]


def load(variant: str, workdir: str, codec_workdir: str, frames: int):
    arg = f"variant={variant}"
    if variant == "tts_speech":
        has_codec = os.path.isdir(os.path.join(codec_workdir, "checkpoints"))
        arg += f",codec_workdir={codec_workdir if has_codec else ''}"
    config = load_experiment_config(os.path.join(_ROOT, "configs", "thinker_talker.py"), arg)
    config.unlock()
    config.sample.max_new_tokens = frames
    if workdir:
        from audiolm.train import sampling

        module, params, _ = sampling.load_params(config, workdir)
    else:
        module = family.build(config.model)
        params = family.init_params(config.model, jax.random.PRNGKey(0))
    return config, module, params, speech_codes.load_codec(config)


def run_once(config, module, params, codec, batch: int, chunk: int, seed: int):
    texts = [TEXTS[i % len(TEXTS)] for i in range(batch)]
    speakers = [i % int(config.data.num_speakers) for i in range(batch)]
    t0 = time.perf_counter()
    first, made, last = None, np.zeros((batch,), np.int64), 0.0
    for piece in tts.stream(module, params, config, codec, texts, speakers,
                            jax.random.PRNGKey(seed), chunk=chunk):
        first = piece["seconds"] if first is None else first
        made += piece["valid"].sum(axis=1)
        last = time.perf_counter() - t0
    return first, last, int(made.max())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="tts_tiny,tts_speech")
    p.add_argument("--workdir", default="", help="trained tts run (default: random params)")
    p.add_argument("--codec_workdir", default=os.path.join("runs", "codec_speech"))
    p.add_argument("--chunk", type=int, default=4, help="frames per waveform chunk")
    p.add_argument("--frames", type=int, default=50, help="at most this many frames")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    rows = []
    for variant in args.configs.split(","):
        config, module, params, codec = load(variant, args.workdir, args.codec_workdir,
                                             args.frames)
        spec = codec[2]
        hop, rate = codec_presets.hop_length(spec), spec.sample_rate
        t0 = time.perf_counter()
        run_once(config, module, params, codec, args.batch, args.chunk, 0)
        compile_s = time.perf_counter() - t0
        firsts, totals, frames = [], [], 0
        for r in range(args.repeats):
            first, total, frames = run_once(config, module, params, codec, args.batch,
                                            args.chunk, 0)
            firsts.append(first)
            totals.append(total)
        audio = frames * hop / rate
        total = statistics.median(totals)
        rows.append(dict(config=variant, chunk=args.chunk,
                         chunk_ms=1000 * args.chunk * hop / rate, batch=args.batch,
                         frames=frames, audio=audio, compile=compile_s,
                         first=statistics.median(firsts), total=total,
                         rtf=total / audio if audio else float("nan"),
                         codec="trained" if config.task.codec.workdir else "random"))
    print("| config | codec | batch | chunk (frames / ms) | frames | audio s | compile s | "
          "first chunk s | total s | RTF |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['codec']} | {r['batch']} | {r['chunk']} / "
              f"{r['chunk_ms']:.0f} | {r['frames']} | {r['audio']:.2f} | {r['compile']:.1f} | "
              f"{r['first']:.3f} | {r['total']:.3f} | {r['rtf']:.2f} |")
    return rows


if __name__ == "__main__":
    main()
