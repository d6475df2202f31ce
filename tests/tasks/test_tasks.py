"""The task house: contracts, the (task, family) table, evaluator names, and the Talker's code
task trained through the generic loop."""

import ast
import importlib
import inspect
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm import config as config_lib
from audiolm.config import ConfigError
from audiolm.models.family import Family
from audiolm.presets.experiment import load_experiment_config
from audiolm.tasks import codes as codes_task
from audiolm.tasks import tts as tts_task
from audiolm.tasks.base import Task
from audiolm.train import loop, metrics as metrics_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("name", sorted(config_lib.FAMILIES))
def test_every_family_module_satisfies_the_family_contract(name):
    module = config_lib.family_module(name)
    assert isinstance(module, Family), name
    assert module.FAMILY == name
    for fn, params in [("build", ["model_config"]), ("init_params", ["model_config", "rng"]),
                       ("describe_params", ["model_config"]), ("rules", ["config"]),
                       ("example_batch", ["model_config", "batch_size", "rng"])]:
        got = list(inspect.signature(getattr(module, fn)).parameters)
        assert got[:len(params)] == params, (name, fn, got)
    assert not hasattr(module, "loss_fn"), f"{name}: the loss belongs to a task"


@pytest.mark.parametrize("name", sorted(config_lib.TASKS))
def test_every_task_module_satisfies_the_task_contract(name):
    module = config_lib.task_module(name)
    assert isinstance(module, Task), name
    assert module.NAME == name and module.EVALUATORS
    for fn, params in [("make_batches", ["config", "family", "split", "finite"]),
                       ("loss_fn", ["module", "params", "batch", "rng", "config", "train"]),
                       ("write_samples", ["module", "params", "config", "workdir"]),
                       ("rules", ["config"])]:
        assert list(inspect.signature(getattr(module, fn)).parameters) == params, (name, fn)
    assert set(config_lib.PAIRS[name]) <= set(config_lib.FAMILIES)


@pytest.mark.parametrize("family", sorted(tts_task.FAMILY_MODULES))
def test_every_tts_family_module_has_the_tts_functions(family):
    """The modules `audiolm.tasks.tts` dispatches to, one per family it trains."""
    assert family in config_lib.PAIRS["tts"]
    module = importlib.import_module(tts_task.FAMILY_MODULES[family])
    for fn, params in [("rules", ["config"]),
                       ("make_batches", ["config", "family", "split", "finite"]),
                       ("loss_fn", ["module", "params", "batch", "rng", "config", "train"]),
                       ("generate_codes", ["module", "params", "config", "texts", "speakers",
                                           "rng"])]:
        assert list(inspect.signature(getattr(module, fn)).parameters) == params, (family, fn)
    assert not hasattr(module, "write_samples"), "the tts task writes samples for every family"


def _config(family="thinker_talker", variant="tiny"):
    return load_experiment_config(f"configs/{family}.py", variant)


def test_an_invalid_pair_names_task_and_family():
    config = _config("moshi")
    config.task.name = "asr"
    with pytest.raises(ConfigError, match=r"task.name='asr' with model.family='moshi'.*"
                                          r"can learn \['codes'.*'tts'"):
        config_lib.validate(config)


def test_unknown_task_and_evaluator_are_named():
    config = _config("pattern_lm")
    config.task.name = "tts_nope"
    with pytest.raises(ConfigError, match=r"task.name='tts_nope': must be one of "
                                          r"\['asr', 'codes', 'codec'.*'tts'"):
        config_lib.validate(config)
    config = _config("pattern_lm")
    config.task.evaluators = ("loss", "cer")
    with pytest.raises(ConfigError, match=r"task.evaluators=.*task 'codes' has no evaluator "
                                          r"'cer'; it supports \['loss'\]"):
        config_lib.validate(config)


def test_asr_cer_needs_transcripts():
    config = _config()
    config.data.name = "synthetic"
    config.task.final_evaluators = ("cer",)
    with pytest.raises(ConfigError, match=r"task.final_evaluators=\('cer',\).*synthetic"):
        config_lib.validate(config)


def test_train_and_sample_hold_no_family_or_task_branch():
    """No comparison of anything with a family or task name inside audiolm/train or
    audiolm/sample (they ask the registry for modules instead)."""
    names = set(config_lib.FAMILIES) | set(config_lib.TASKS)
    offenders = []
    for sub in ("train", "sample"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, "audiolm", sub)):
            for f in files:
                if not f.endswith(".py"):
                    continue
                path = os.path.join(dirpath, f)
                for node in ast.walk(ast.parse(open(path).read())):
                    if isinstance(node, ast.Compare):
                        consts = [c.value for c in ast.walk(node) if isinstance(c, ast.Constant)]
                        if any(isinstance(c, str) and c in names for c in consts):
                            offenders.append(f"{path}:{node.lineno}")
    assert not offenders, offenders


def _talker_codes_config(steps=12):
    config = _config()
    config.task.name = "codes"
    config.task.final_evaluators = ()
    config.data.name = "synthetic"
    config.train.loss = dict(codebook0_weight=1.0, predictor_weight=1.0)
    config.data.batch_size = 4
    config.data.num_train = 4  # one fixed batch
    config.data.num_validation = 4
    config.train.steps = steps
    config.train.warmup_steps = 0
    config.train.schedule = "constant"
    config.train.learning_rate = 3e-3
    config.train.log_every = 1
    config.train.eval_every = steps
    config.train.checkpoint_every = steps
    config.mesh.axes.data = 1
    return config


def test_talker_code_task_needs_audio_output_and_its_loss_weights():
    config = _talker_codes_config()
    config.model.enable_audio_output = False
    with pytest.raises(ConfigError, match=r"model.enable_audio_output=False.*Talker"):
        config_lib.validate(config)
    config = _talker_codes_config()
    config.train.loss = dict(text_weight=1.0, text_input_noise=0.0)
    with pytest.raises(ConfigError, match=r"train.loss"):
        config_lib.validate(config)


def test_talker_loss_matches_a_float64_computation():
    config = _talker_codes_config()
    config_lib.validate(config)
    family = config_lib.family_module("thinker_talker")
    module = family.build(config.model)
    params = family.init_params(config.model, jax.random.PRNGKey(0))
    batch = codes_task.talker_example_batch(config.model, 2, np.random.default_rng(1), frames=5)
    loss, metrics = jax.jit(lambda p: codes_task.talker_loss(module, p, batch, None, config,
                                                             True))(params)

    def forward(m):  # the documented input: frame t reads frame t-1 (codec bos first)
        frames = m.talker.embed_frames(jnp.asarray(batch["codes"]))
        bos = m.talker.embed_codec(jnp.full((2, 1), config.model.talker.codec_bos_id))
        return m.talker(jnp.concatenate([bos, frames[:, :-1]], 1), jnp.asarray(batch["codes"]))

    out = module.apply({"params": params}, method=forward)
    codes, mask = batch["codes"], batch["frame_mask"]
    lp0 = jax.nn.log_softmax(np.asarray(out["logits"], np.float64), axis=-1)
    ce0 = np.mean([-lp0[b, t, codes[b, 0, t]] for b in range(2) for t in range(5) if mask[b, t]])
    lp = jax.nn.log_softmax(np.asarray(out["predictor_logits"], np.float64), axis=-1)
    g = codes.shape[1]
    ce = np.mean([-lp[b, t, k - 1, codes[b, k, t]] for b in range(2) for t in range(5)
                  if mask[b, t] for k in range(1, g)])
    assert abs(float(metrics["codebook0_ce"]) - ce0) <= 1e-5
    assert abs(float(metrics["predictor_ce"]) - ce) <= 1e-5
    aux = config.train.moe_aux_weight * float(metrics["load_balance_loss"])
    assert abs(float(loss) - (ce0 + ce + aux)) <= 1e-4


def test_talker_code_task_learns_through_the_loop(tmp_path):
    config = _talker_codes_config()
    loop.run(config, str(tmp_path))
    train = metrics_lib.read_metrics(str(tmp_path), "train")
    losses = np.array([r["loss"] for r in train])
    assert len(losses) == 12 and np.isfinite(losses).all()
    assert losses[-1] < 0.6 * losses[0], losses
    (final_eval,) = metrics_lib.read_metrics(str(tmp_path), "eval")
    assert {"codebook0_ce", "predictor_ce", "codebook0_accuracy"} <= set(final_eval)
