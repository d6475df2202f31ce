"""The skeleton every experiment config shares, and the tools config files are written with.

Config files (`configs/<family>.py`) are loaded by path, never imported as a package; they
compose an experiment from the pieces here:

  parse_arg(arg, **defaults)       the typed arg string after the colon of
                                   `--config=configs/moshi.py:variant=tiny,slices=16`
  base_config()                    the commented seed / data / task / train / sample / mesh
                                   sections; the config file adds `model` and adjusts the rest
  default_mesh_rules()             logical axis name -> mesh axes
  load_experiment_config(path, arg)  `get_config(arg)` of a config file loaded by path (what
                                   `--config=path:arg` gives `audiolm.main`), for tests,
                                   notebooks and experiment scripts
"""

from __future__ import annotations

import ast
import importlib.util
import os
from typing import Any

import ml_collections

from audiolm import data as data_lib

# The source checkout: the folder holding `audiolm/` (and `configs/`).
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
    """Parses "k1=v1,k2=v2" with types taken from `defaults`.

    A bare first token without "=" sets the first default (so `:tiny` means `variant=tiny`).
    Unknown keys and unparsable values raise ValueError naming the key and the expected type.
    """
    out = ml_collections.ConfigDict(defaults)
    if not arg:
        return out
    names = list(defaults)
    for i, item in enumerate(part for part in arg.split(",") if part):
        if "=" in item:
            key, raw = item.split("=", 1)
        elif i == 0 and names:
            key, raw = names[0], item
        else:
            raise ValueError(f"config arg {item!r}: expected key=value (keys: {names})")
        key = key.strip()
        if key not in defaults:
            raise ValueError(f"config arg {key!r} is unknown; expected one of {names}")
        out[key] = _convert(key, raw.strip(), defaults[key])
    return out


def _convert(key: str, raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        if raw.lower() in ("true", "1", "yes"):
            return True
        if raw.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"config arg {key}={raw!r}: expected a bool (True/False)")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"config arg {key}={raw!r}: expected an int") from None
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"config arg {key}={raw!r}: expected a float") from None
    if isinstance(default, str):
        return raw
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        raise ValueError(f"config arg {key}={raw!r}: expected a Python literal") from None


def default_mesh_rules() -> tuple:
    """Logical axis name -> mesh axes. Weights shard on fsdp/tensor/expert, batches on data+fsdp."""
    return (
        ("batch", ("data", "fsdp")),
        ("length", None),
        ("embed", "fsdp"),
        ("heads", "tensor"),
        ("kv_heads", "tensor"),
        ("head_dim", None),
        ("mlp", "tensor"),
        ("experts", "expert"),
        ("vocab", "tensor"),
        ("codebooks", None),
        ("conv_in", None),
        ("conv_out", "tensor"),
    )


def base_config() -> ml_collections.ConfigDict:
    """Sections shared by every experiment; the config file fills `model` and adjusts the rest."""
    config = ml_collections.ConfigDict()
    config.seed = 0  # seeds parameter init, dropout and data order
    config.init_from = ""  # checkpoint dir or pretrained model dir used when workdir has none
    # () = the whole params tree from init_from; else only these subtrees (e.g. ('aut',
    # 'thinker')), the rest from the scratch init
    config.init_from_subtrees = ()
    config.data = ml_collections.ConfigDict(data_lib.DEFAULTS.to_dict())  # see audiolm.data

    config.task = task = ml_collections.ConfigDict()
    task.name = "codes"  # what is learnt: asr (speech -> transcript) | codes (next codes)
    task.evaluators = ("loss",)  # run at every eval step on the validation split
    task.final_evaluators = ()  # run once at the end of training on the test split

    config.train = train = ml_collections.ConfigDict()
    train.steps = 1000  # optimizer steps
    train.optimizer = "adamw"  # adamw | adafactor | sgd
    train.learning_rate = 3e-4  # peak learning rate
    train.schedule = "cosine"  # cosine | linear | constant (after warmup)
    train.warmup_steps = 100  # linear warmup from 0
    train.min_lr_ratio = 0.1  # final lr = ratio * peak
    train.b1 = 0.9  # Adam beta1
    train.b2 = 0.95  # Adam beta2
    train.eps = 1e-8  # Adam epsilon
    train.weight_decay = 0.01  # decoupled, not applied to norms, biases or embeddings
    train.clip_norm = 1.0  # global gradient-norm clip; 0 disables
    train.grad_accum_steps = 1  # micro-batches per optimizer step
    train.log_every = 10  # steps between metric writes
    train.eval_every = 200  # steps between evaluations
    train.eval_steps = 8  # validation batches per evaluation (0 = whole split)
    train.checkpoint_every = 200  # steps between checkpoints
    train.keep_checkpoints = 3  # checkpoints kept by the manager
    train.dtype = "float32"  # compute dtype: float32 | bfloat16 (params stay float32)
    train.moe_aux_weight = 1e-3  # load-balancing loss weight (Qwen3 router_aux_loss_coef)
    train.moe_z_weight = 0.0  # router z-loss weight
    # Persistent XLA compilation cache (reruns and resumes skip compiling); "" disables.
    train.compilation_cache_dir = "~/.cache/audiolm/jax_cache"
    train.profile_steps = ""  # "start,stop": jax.profiler trace of those steps into tensorboard/
    train.loss = ml_collections.ConfigDict()  # family-specific loss weights
    # top-level params subtree -> its own optimizer settings, e.g. discriminator.learning_rate
    train.param_groups = ml_collections.ConfigDict()

    config.sample = sample = ml_collections.ConfigDict()
    sample.temperature = 0.8  # 0 means greedy
    sample.top_k = 250  # 0 disables
    sample.top_p = 1.0  # nucleus mass; 1 disables
    sample.max_new_tokens = 64  # decode steps (frames for audio families)
    sample.cfg_scale = 1.0  # classifier-free guidance scale; 1 = conditional only
    sample.seed = 0  # sampling PRNG seed
    sample.num_samples = 1  # samples written by --mode=sample
    sample.extra = ml_collections.ConfigDict()  # family-specific sampling options

    config.mesh = mesh = ml_collections.ConfigDict()
    mesh.axes = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "expert": 1, "tensor": 1})
    mesh.rules = default_mesh_rules()
    return config


def load_experiment_config(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """`get_config(arg)` of the config file at `path`.

    A relative `path` is looked up in the working directory, then in the source checkout (so
    `load_experiment_config("configs/moshi.py", "tiny")` works from tests and notebooks/).
    """
    candidates = [path] if os.path.isabs(path) else [path, os.path.join(REPO_ROOT, path)]
    found = next((p for p in candidates if os.path.isfile(p)), None)
    if found is None:
        raise FileNotFoundError(f"load_experiment_config: path={path!r} is not a file (looked "
                                f"in {candidates})")
    name = "audiolm_config_" + os.path.splitext(os.path.basename(found))[0]
    spec = importlib.util.spec_from_file_location(name, found)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise AttributeError(f"load_experiment_config: {found} defines no get_config(arg)")
    return module.get_config() if arg is None else module.get_config(arg)
