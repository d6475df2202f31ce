"""`python -m audiolm.main --mode=sample` end to end on the tiny pattern LM.

A 2-step training run writes a checkpoint into the workdir; sampling then restores it and writes
`samples/tokens.npz`, one WAV per sample (the tiny model's mu-law pretransform decodes codes to
audio; WAVs are 16-bit PCM, so they equal `decode(codes)` within 1/32768) and
`samples/summary.json`. A workdir without a checkpoint and without `init_from` fails with a clear
message and a non-zero exit; `init_from=<that workdir>` restores the same params.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import soundfile as sf

from audiolm.models import pretransform as pretransform_lib
from audiolm.tasks import codes as codes_task

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = "--config=configs/pattern_lm.py:variant=tiny"
SMALL = ["--config.data.name=synthetic", "--config.data.batch_size=2",
         "--config.data.num_train=2", "--config.data.num_validation=2",
         "--config.data.num_test=2", "--config.train.log_every=1",
         "--config.train.checkpoint_every=2", "--config.train.eval_steps=1",
         "--config.train.warmup_steps=0", "--config.train.steps=2"]
N, FRAMES = 3, 8


def _main(*args, timeout=900):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")  # one CPU device, like the launcher
    return subprocess.run([sys.executable, "-m", "audiolm.main", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("trained"))
    proc = _main(TINY, f"--workdir={workdir}", *SMALL)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return workdir


def test_sample_writes_tokens_wavs_and_summary(trained):
    proc = _main(TINY, f"--workdir={trained}", "--mode=sample", *SMALL,
                 f"--config.sample.num_samples={N}", f"--config.sample.max_new_tokens={FRAMES}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = os.path.join(trained, "samples")
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert summary["params_from"] == os.path.join(trained, "checkpoints")
    assert (summary["num_samples"], summary["frames"], summary["prompt_frames"]) == (N, FRAMES, 0)
    tokens = np.load(os.path.join(out, "tokens.npz"))
    codes = tokens["codes"]
    assert codes.shape == (N, 4, FRAMES) and codes.dtype == np.int32
    assert codes.min() >= 0 and codes.max() < 16
    assert "cond__prompt" in tokens.files  # the conditions the samples were drawn with
    from audiolm.presets import pattern_lm as presets

    pt = pretransform_lib.build(presets.tiny().pretransform)
    audio = np.asarray(pt.decode(codes))
    assert len(summary["wavs"]) == N
    for i, path in enumerate(summary["wavs"]):
        assert path == os.path.join(out, f"sample_{i}.wav")
        wav, rate = sf.read(path, dtype="float32")
        assert rate == pt.sample_rate and wav.shape == (FRAMES * pt.hop_length,)
        np.testing.assert_allclose(wav, audio[i], atol=1.0 / 32768 + 1e-6)
    printed = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert printed == summary


def test_no_checkpoint_and_no_init_from_fails_clearly(tmp_path):
    proc = _main(TINY, f"--workdir={tmp_path}", "--mode=sample", *SMALL, timeout=300)
    assert proc.returncode != 0
    assert "init_from" in proc.stderr and "holds no checkpoint" in proc.stderr, proc.stderr[-2000:]
    assert not os.path.exists(os.path.join(tmp_path, "samples"))


def test_init_from_restores_the_same_params(trained, tmp_path):
    from audiolm.train import sampling as runner
    from audiolm.presets.experiment import load_experiment_config

    config = load_experiment_config("configs/pattern_lm.py", "variant=tiny")
    config.data.name = "synthetic"
    own = runner.load_params(config, trained)
    config.init_from = trained
    module, params, source = runner.load_params(config, str(tmp_path))
    assert source == trained and module.spec == own[0].spec
    for a, b in zip(jax.tree_util.tree_leaves(own[1]), jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_write_samples_continues_a_prompt(trained, tmp_path):
    """sample.extra.prompt_frames = P: the first P frames of the held-out examples are kept and
    greedy decoding continues them (in-process, params restored from the trained workdir)."""
    from audiolm.sample import pattern_lm as sampler
    from audiolm.train import sampling as runner
    from audiolm.presets.experiment import load_experiment_config

    config = load_experiment_config("configs/pattern_lm.py", "variant=tiny")
    config.data.name = "synthetic"
    config.sample.num_samples, config.sample.max_new_tokens = 3, 6
    config.sample.temperature, config.sample.cfg_scale = 0.0, 1.0
    config.sample.extra.prompt_frames = 3
    module, params, _ = runner.load_params(config, trained)
    summary = codes_task.write_samples(module, params, config, str(tmp_path))
    codes = np.load(summary["tokens"])["codes"]
    examples = sampler._examples(_test_batches(config), 3, config)
    np.testing.assert_array_equal(codes[:, :, :3], examples["codes"][:, :, :3])
    assert summary["prompt_frames"] == 3 and codes.shape == (3, 4, 6)
    assert not np.array_equal(codes[:, :, 3:], examples["codes"][:, :, 3:6])  # generated, not copied


def _test_batches(config):
    """The held-out batches the `codes` task hands the pattern-LM sample writer."""
    from audiolm import config as config_lib

    return codes_task.make_batches(config, config_lib.family_module("pattern_lm"), "test",
                                   finite=True)


def test_examples_cycle_a_small_test_split():
    from audiolm.sample import pattern_lm as sampler
    from audiolm.presets.experiment import load_experiment_config

    config = load_experiment_config("configs/pattern_lm.py", "variant=tiny")
    config.data.name, config.data.batch_size, config.data.num_test = "synthetic", 2, 2
    rows = sampler._examples(_test_batches(config), 5, config)
    assert rows["codes"].shape[0] == 5
    for i in (2, 4):
        np.testing.assert_array_equal(rows["codes"][i], rows["codes"][0])
    assert not np.array_equal(rows["codes"][1], rows["codes"][0])
