"""Neural audio codec training (`task.name = "codec"`, family "codec").

Batches: `audio` [B, S] and `audio_mask` [B, S] from the embedded speech set or a manifest
(`audiolm.data.make_iterator`, generated / resampled at `data.sample_rate`, which must equal
`model.sample_rate`) or the family's synthetic sinusoids (`data.name="synthetic"`). Training
cuts one random segment of `train.loss.segment_seconds` (whole frames) from each row's valid
samples; evaluation codes the whole utterances.

Loss (`train.loss` weights):
  mel_weight * multi-scale log-mel L1 (one mel spectrogram per scale: n_fft = min_n_fft * 2**k
      for k < num_scales, hop n_fft / 4, `n_mels` Slaney bands, log(mel + 1e-5))
  + stft_weight * multi-resolution STFT loss (spectral convergence + log-magnitude L1 at the
      same n_fft values)
  + commit_weight * commitment ||r - sg(e)||^2 + codebook_weight * ||sg(r) - e||^2
      (straight-through RVQ; with model.quantizer.codebook_update "loss" the codebook term
      moves the codebooks; with "ema" they are buffers without gradient and `update_buffers`
      learns them: k-means init, EMA, dead-code restarts,
      `audiolm.models.codec.learn_quantizer`)
  + with `model.discriminator.n_ffts` set (adversarial training, `adversarial_terms`):
    adv_weight * hinge generator loss + feat_weight * relative feature-matching L1
    + the discriminator's hinge loss (weight 1: only the `discriminator` params receive its
    gradient; its pace is `train.param_groups.discriminator`, its own Adam)
  Padding samples are zeros in both signals (they add nothing to the spectral losses); the VQ
  terms average over valid frames and active levels. With probability `quantizer_dropout` a
  training batch decodes a random prefix of n codebooks (n uniform in [max(num_semantic, 1),
  N]), else all N.
Metrics: the terms (with a discriminator also `adv_loss`, `feat_loss`, `disc_loss`,
`disc_acc_real`, `disc_acc_fake`), `active_codebooks`, and per codebook q `perplexity_q{q}`
(exp of the entropy of its code histogram over the batch's valid frames) and `usage_q{q}`
(fraction of its entries used in the batch).
With codebook_update "ema", training also reports `dead_codes` (entries restarted this step).

Evaluators: "loss" and "codec" (`mel_distance`: mean |log-mel difference| at n_fft 1024 /
hop 256 / 80 mels per utterance; `si_snr` in dB; `bitrate` in bits/s; over `train.eval_steps`
batches of the split, all codebooks); opt-in "judge" (`audiolm.tasks.evaluators.judged_speech`:
the independent judge's WER / CER of the reconstructions beside the originals'; speech data
only). `write_samples` (`--mode=sample`): original /
reconstructed WAV pairs of the first `sample.num_samples` test utterances.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from audiolm import config as config_lib
from audiolm import data as data_lib
from audiolm.audio import features
from audiolm.audio.io import write_audio
from audiolm.config import check_float, check_int, check_schema, require
from audiolm.models import codec as codec_lib
from audiolm.tasks import evaluators, synthetic
from audiolm.tasks.base import BUFFER_INPUTS, EvalContext

NAME = "codec"
EVALUATORS = ("loss", "codec", "judge")
# train.loss: the shared rule makes every entry a non-negative number.
LOSS_SCHEMA = dict(mel_weight=0.0, stft_weight=0.0, commit_weight=0.0, codebook_weight=0.0,
                   adv_weight=0.0, feat_weight=0.0,
                   quantizer_dropout=0.0, segment_seconds=0.0, min_n_fft=0, num_scales=0,
                   n_mels=0)
LOG_EPS = 1e-5  # floor inside the spectral logs
EVAL_MEL = dict(n_fft=1024, hop=256, n_mels=80)  # the mel distance of the "codec" evaluator


def rules(config: Any) -> None:
    """train.loss of the codec task; the data must be at the codec's sample rate."""
    check_schema(config, "train.loss", LOSS_SCHEMA)
    for key in ("mel_weight", "stft_weight", "commit_weight", "codebook_weight"):
        check_float(config, f"train.loss.{key}", lo=0.0)
    scales = config_lib.get_path(config, "model.discriminator.n_ffts")
    for key in ("adv_weight", "feat_weight"):
        weight = check_float(config, f"train.loss.{key}", lo=0.0)
        require(weight == 0 or len(scales) > 0, f"train.loss.{key}", weight,
                "needs a discriminator: set model.discriminator.n_ffts (e.g. [256, 512, 1024])")
    check_float(config, "train.loss.quantizer_dropout", lo=0.0, hi=1.0)
    check_float(config, "train.loss.segment_seconds", lo=0.0)
    check_int(config, "train.loss.n_mels", lo=1)
    n_fft = check_int(config, "train.loss.min_n_fft", lo=16)
    require(n_fft % 4 == 0, "train.loss.min_n_fft", n_fft, "must be divisible by 4 (hop n_fft/4)")
    check_int(config, "train.loss.num_scales", lo=1, hi=8)
    rate = int(config.model.sample_rate)
    if not synthetic.is_synthetic(config):
        require(int(config.data.sample_rate) == rate, "data.sample_rate", config.data.sample_rate,
                f"must equal model.sample_rate={rate}: the speech set is generated (and manifests "
                f"resampled) at data.sample_rate")
    seg = float(config.train.loss.segment_seconds)
    hop = codec_lib.hop_length(codec_lib.spec_of(config.model))
    require(seg == 0 or seg * rate >= hop, "train.loss.segment_seconds", seg,
            f"must be 0 (whole utterances) or at least one frame ({hop / rate:.4f} s)")
    evaluators.require_transcripts(config, "judge")


def make_batches(config: Any, family: Any, split: str, finite: bool = False):
    """Resumable iterator of `split` (one ordered pass when `finite`)."""
    if synthetic.is_synthetic(config):
        return synthetic.make_batches(config, family, split, finite)
    return data_lib.make_iterator(config.data, split, train=not finite)


# ---------------------------------------------------------------------------------------------
# Spectral losses and metrics (also used by experiments/codec_eval.py)


def stft_magnitude(x: jax.Array, n_fft: int, hop: int) -> jax.Array:
    """|STFT| [B, F, n_fft/2+1] of x [B, S]: periodic Hann window, frames every `hop` samples
    after n_fft/2 zeros on both sides (zeros, not reflection: padded batches stay exact)."""
    pad = n_fft // 2
    x = jnp.pad(x.astype(jnp.float32), ((0, 0), (pad, pad)))
    frames_n = (x.shape[1] - n_fft) // hop + 1
    idx = np.arange(frames_n)[:, None] * hop + np.arange(n_fft)[None, :]
    spec = jnp.fft.rfft(x[:, idx] * jnp.asarray(features.hann_window(n_fft)), axis=-1)
    return jnp.sqrt(jnp.real(spec) ** 2 + jnp.imag(spec) ** 2 + 1e-12)


def log_mel(x: jax.Array, sample_rate: int, n_fft: int, hop: int, n_mels: int) -> jax.Array:
    """log(mel + 1e-5) [B, F, n_mels] of x [B, S] (power mel, Slaney filters)."""
    mag = stft_magnitude(x, n_fft, hop)
    filters = jnp.asarray(features.mel_filters(sample_rate, n_fft, n_mels))
    mel = jnp.einsum("bfk,km->bfm", mag ** 2, filters, precision=jax.lax.Precision.HIGHEST)
    return jnp.log(mel + LOG_EPS)


def multiscale_mel_l1(ref: jax.Array, est: jax.Array, sample_rate: int, scales, n_mels: int):
    """Mean over scales of mean |log-mel(ref) - log-mel(est)|. ref, est [B, S]."""
    terms = [jnp.mean(jnp.abs(log_mel(ref, sample_rate, n, n // 4, n_mels)
                              - log_mel(est, sample_rate, n, n // 4, n_mels))) for n in scales]
    return sum(terms) / len(terms)


def multiresolution_stft(ref: jax.Array, est: jax.Array, scales) -> jax.Array:
    """Mean over scales of spectral convergence ||S_ref - S_est||_F / ||S_ref||_F plus mean
    |log S_ref - log S_est| (Parallel WaveGAN's multi-resolution STFT loss)."""
    total = 0.0
    for n in scales:
        a, b = stft_magnitude(ref, n, n // 4), stft_magnitude(est, n, n // 4)
        sc = jnp.sqrt(jnp.sum((a - b) ** 2)) / jnp.maximum(jnp.sqrt(jnp.sum(a ** 2)), 1e-7)
        total = total + sc + jnp.mean(jnp.abs(jnp.log(a + LOG_EPS) - jnp.log(b + LOG_EPS)))
    return total / len(scales)


def si_snr(ref: jax.Array, est: jax.Array, mask: jax.Array) -> jax.Array:
    """Scale-invariant SNR in dB per row over the valid samples: ref, est, mask [B, S] -> [B]."""
    m = mask.astype(jnp.float32)
    n = jnp.maximum(jnp.sum(m, axis=1, keepdims=True), 1.0)
    r = (ref - jnp.sum(ref * m, axis=1, keepdims=True) / n) * m
    e = (est - jnp.sum(est * m, axis=1, keepdims=True) / n) * m
    scale = jnp.sum(e * r, axis=1, keepdims=True) / jnp.maximum(jnp.sum(r * r, axis=1,
                                                                        keepdims=True), 1e-8)
    target = scale * r
    noise = e - target
    return 10.0 * jnp.log10(jnp.maximum(jnp.sum(target ** 2, axis=1), 1e-8)
                            / jnp.maximum(jnp.sum(noise ** 2, axis=1), 1e-8))


def mel_distance(ref: jax.Array, est: jax.Array, mask: jax.Array, sample_rate: int) -> jax.Array:
    """Mean |log-mel difference| per row over its valid frames (EVAL_MEL settings) -> [B]."""
    n, hop, mels = EVAL_MEL["n_fft"], EVAL_MEL["hop"], EVAL_MEL["n_mels"]
    m = mask.astype(jnp.float32)
    d = jnp.abs(log_mel(ref * m, sample_rate, n, hop, mels)
                - log_mel(est * m, sample_rate, n, hop, mels))  # [B, F, M]
    frames = d.shape[1]
    valid = (jnp.arange(frames)[None, :] * hop) < jnp.sum(m, axis=1, keepdims=True)
    return (jnp.sum(jnp.mean(d, axis=-1) * valid, axis=1)
            / jnp.maximum(jnp.sum(valid, axis=1), 1))


def code_statistics(codes: jax.Array, frame_mask: jax.Array, codebook_size: int,
                    active: jax.Array) -> dict[str, jax.Array]:
    """perplexity_q{q} and usage_q{q} of codes [B, N, T] over valid frames [B, T]; levels
    beyond `active` report 0 (they were not decoded)."""
    out = {}
    m = frame_mask.astype(jnp.float32)
    for q in range(codes.shape[1]):
        counts = jnp.sum(jax.nn.one_hot(codes[:, q], codebook_size) * m[..., None], axis=(0, 1))
        p = counts / jnp.maximum(jnp.sum(counts), 1.0)
        entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
        on = (q < active).astype(jnp.float32)
        out[f"perplexity_q{q}"] = on * jnp.exp(entropy)
        out[f"usage_q{q}"] = on * jnp.mean((counts > 0).astype(jnp.float32))
    return out


# ---------------------------------------------------------------------------------------------
# Loss


def random_segments(audio: jax.Array, mask: jax.Array, length: int, rng: jax.Array):
    """One random window of `length` samples per row, inside its valid samples where it fits
    (else from the start): audio, mask [B, S] -> [B, length]."""
    valid = jnp.sum(mask.astype(jnp.int32), axis=1)
    hi = jnp.maximum(valid - length, 0) + 1
    start = jnp.floor(jax.random.uniform(rng, valid.shape) * hi).astype(jnp.int32)
    cut = jax.vmap(lambda x, s: jax.lax.dynamic_slice(x, (s,), (length,)))
    return cut(audio, start), cut(mask, start)


def adversarial_terms(module: Any, params: Any, real: jax.Array,
                      fake: jax.Array) -> dict[str, jax.Array]:
    """Hinge GAN terms of the multi-scale STFT discriminator (EnCodec's), real / fake [B, S].

    One differentiation trains both players: the generator terms see the discriminator through
    stop_gradient on its params, the discriminator term sees stop_gradient(fake), so the
    gradient of their sum reaches each side from its own terms only.
      adv_loss  = mean_k mean relu(1 - D_k(fake))                  (generator)
      feat_loss = mean_{k,l} mean |f_kl(real) - f_kl(fake)| / mean |f_kl(real)|   (generator)
      disc_loss = mean_k [mean relu(1 - D_k(real)) + mean relu(1 + D_k(sg(fake)))]
    plus `disc_acc_real` / `disc_acc_fake`: the fraction of logits on the right side of 0.
    """
    def discriminate(p, wav):
        return module.apply({"params": p}, wav, method=codec_lib.Codec.discriminate)

    frozen = dict(params)
    frozen["discriminator"] = jax.lax.stop_gradient(params["discriminator"])
    real_out = discriminate(params, real)
    fake_out = discriminate(params, jax.lax.stop_gradient(fake))
    gen_out = discriminate(frozen, fake)
    scales = len(real_out)
    adv = sum(jnp.mean(jax.nn.relu(1.0 - logits)) for logits, _ in gen_out) / scales
    feat_terms = []
    for (_, real_maps), (_, fake_maps) in zip(real_out, gen_out):
        for r, f in zip(real_maps, fake_maps):
            r = jax.lax.stop_gradient(r.astype(jnp.float32))
            feat_terms.append(jnp.mean(jnp.abs(r - f.astype(jnp.float32)))
                              / jnp.maximum(jnp.mean(jnp.abs(r)), 1e-8))
    disc = sum(jnp.mean(jax.nn.relu(1.0 - r)) + jnp.mean(jax.nn.relu(1.0 + f))
               for (r, _), (f, _) in zip(real_out, fake_out)) / scales
    acc_real = sum(jnp.mean((r > 0).astype(jnp.float32)) for r, _ in real_out) / scales
    acc_fake = sum(jnp.mean((f < 0).astype(jnp.float32)) for f, _ in fake_out) / scales
    return {"adv_loss": adv, "feat_loss": sum(feat_terms) / len(feat_terms), "disc_loss": disc,
            "disc_acc_real": acc_real, "disc_acc_fake": acc_fake}


def loss_fn(module: Any, params: Any, batch: Mapping[str, Any], rng: jax.Array, config: Any,
            train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Spectral reconstruction + VQ losses (see the module docstring). audio, audio_mask [B, S]."""
    spec = module.spec
    w = config.train.loss
    q = spec.quantizer
    audio = jnp.asarray(batch["audio"], jnp.float32)
    mask = jnp.asarray(batch["audio_mask"]).astype(bool)
    seg_rng, drop_rng = jax.random.split(rng)
    hop = codec_lib.hop_length(spec)
    seg = int(round(float(w.segment_seconds) * spec.sample_rate / hop)) * hop
    if train and seg and seg < audio.shape[1]:
        audio, mask = random_segments(audio, mask, seg, seg_rng)
    audio = audio * mask
    lo = max(q.num_semantic, 1)
    active = jnp.asarray(q.num_codebooks, jnp.int32)
    if train and float(w.quantizer_dropout) > 0:
        pick_key, coin_key = jax.random.split(drop_rng)
        prefix = jax.random.randint(pick_key, (), lo, q.num_codebooks + 1)
        active = jnp.where(jax.random.bernoulli(coin_key, float(w.quantizer_dropout)), prefix,
                           active)
    out = module.apply({"params": params}, audio, active)
    recon = out["audio"] * mask
    scales = tuple(int(w.min_n_fft) * 2 ** k for k in range(int(w.num_scales)))
    mel = multiscale_mel_l1(audio, recon, spec.sample_rate, scales, int(w.n_mels))
    stft = multiresolution_stft(audio, recon, scales)
    frames = out["codes"].shape[-1]
    frame_mask = jnp.pad(mask, ((0, 0), (0, frames * hop - mask.shape[1])))[:, ::hop]
    fm = frame_mask.astype(jnp.float32)
    denom = jnp.maximum(jnp.sum(fm) * active.astype(jnp.float32), 1.0)
    commit = jnp.sum(out["commit"] * fm[..., None]) / denom
    codebook = jnp.sum(out["codebook"] * fm[..., None]) / denom
    loss = (w.mel_weight * mel + w.stft_weight * stft + w.commit_weight * commit
            + w.codebook_weight * codebook)
    metrics = {"mel_loss": mel, "stft_loss": stft, "commit_loss": commit,
               "codebook_loss": codebook, "active_codebooks": active.astype(jnp.float32)}
    if spec.discriminator.n_ffts:
        gan = adversarial_terms(module, params, audio, recon)
        loss = (loss + w.adv_weight * gan["adv_loss"] + w.feat_weight * gan["feat_loss"]
                + gan["disc_loss"])
        metrics.update(gan)
    metrics.update(code_statistics(out["codes"], frame_mask, q.codebook_size, active))
    metrics["loss"] = loss
    if train and q.codebook_update == "ema":  # what update_buffers learns the codebooks from
        metrics[BUFFER_INPUTS] = {"latent": jax.lax.stop_gradient(out["latent"]),
                                  "frame_mask": frame_mask}
    return loss, metrics


def update_buffers(module: Any, params: Any, inputs: Any, rng: jax.Array,
                   config: Any) -> tuple[dict, dict[str, jax.Array]]:
    """The train step's buffer hook (`audiolm.tasks.base.Task`): with
    model.quantizer.codebook_update "ema", the quantizer's EMA buffers after this batch
    (`codec.learn_quantizer` on the latent [B, T, D] and frame mask [B, T] that loss_fn handed
    over) and `dead_codes`; else none."""
    if module.spec.quantizer.codebook_update != "ema":
        return {}, {}
    return codec_lib.learn_quantizer(module.spec, params, inputs["latent"],
                                     inputs["frame_mask"], rng)


# ---------------------------------------------------------------------------------------------
# Evaluation and samples


@functools.lru_cache(maxsize=8)
def reconstruct_fn(module: Any):
    """Jitted (params, audio, mask) -> (reconstruction, si_snr [B], mel_distance [B]), all
    codebooks; one per module (modules are hashable), so each shape compiles once."""
    @jax.jit
    def run(params, audio, mask):
        mask = mask.astype(bool)
        audio = audio * mask
        recon = module.apply({"params": params}, audio)["audio"] * mask
        return recon, si_snr(audio, recon, mask), mel_distance(audio, recon, mask,
                                                               module.spec.sample_rate)
    return run


@evaluators.register("codec")
def codec_evaluator(ctx: EvalContext, params: Any, split: str) -> dict[str, float]:
    """Mean mel distance and SI-SNR (dB) of the reconstructions of `train.eval_steps` batches
    of `split` (0 = all), all codebooks; plus the bitrate (bits/s)."""
    config = ctx.config
    family = config_lib.family_module(config.model.family)
    run = reconstruct_fn(ctx.module)
    limit = int(config.train.eval_steps)
    mels, snrs = [], []
    for i, batch in enumerate(make_batches(config, family, split, finite=True)):
        if limit and i >= limit:
            break
        mask = np.asarray(batch["audio_mask"]).astype(bool)
        _, snr, mel = jax.device_get(run(params, jnp.asarray(batch["audio"]), jnp.asarray(mask)))
        rows = mask.any(axis=1)  # padded rows of a final batch have no samples
        mels.extend(np.asarray(mel)[rows].tolist())
        snrs.extend(np.asarray(snr)[rows].tolist())
    return {"mel_distance": float(np.mean(mels)) if mels else float("nan"),
            "si_snr": float(np.mean(snrs)) if snrs else float("nan"),
            "bitrate": float(codec_lib.bitrate(ctx.module.spec))}


def judged_audio(ctx: EvalContext, params: Any, batch: Mapping[str, Any]):
    """The "judge" evaluator's audio: the batch's reconstructions [B, S] (all codebooks) and
    its audio_mask [B, S]."""
    mask = np.asarray(batch["audio_mask"]).astype(bool)
    recon, _, _ = reconstruct_fn(ctx.module)(params, jnp.asarray(batch["audio"]),
                                             jnp.asarray(mask))
    return recon, mask


def write_samples(module: Any, params: Any, config: Any, workdir: str) -> dict:
    """`--mode=sample`: `samples/{k:03d}_original.wav` and `_reconstructed.wav` of the first
    `sample.num_samples` utterances of the test split; returns their SI-SNR and mel distance
    (the sample runner writes the summary to `samples/summary.json`)."""
    family = config_lib.family_module(config.model.family)
    run = reconstruct_fn(module)
    out_dir = os.path.join(workdir, "samples")
    os.makedirs(out_dir, exist_ok=True)
    want = int(config.sample.num_samples)
    rate = int(module.spec.sample_rate)
    rows_out = []
    for batch in make_batches(config, family, "test", finite=True):
        mask = np.asarray(batch["audio_mask"]).astype(bool)
        recon, snr, mel = jax.device_get(run(params, jnp.asarray(batch["audio"]),
                                             jnp.asarray(mask)))
        for row in range(mask.shape[0]):
            n = int(mask[row].sum())
            if len(rows_out) >= want or n == 0:
                continue
            k = len(rows_out)
            write_audio(os.path.join(out_dir, f"{k:03d}_original.wav"),
                        np.asarray(batch["audio"])[row, :n], rate)
            write_audio(os.path.join(out_dir, f"{k:03d}_reconstructed.wav"),
                        np.clip(np.asarray(recon)[row, :n], -1.0, 1.0), rate)
            rows_out.append({"sample": k, "seconds": n / rate, "si_snr": float(snr[row]),
                             "mel_distance": float(mel[row])})
        if len(rows_out) >= want:
            break
    return {"samples": rows_out, "dir": out_dir, "bitrate": float(codec_lib.bitrate(module.spec))}
