"""A tiny next-token LM family used to test the generic loop without the real model families.

It follows the family contract (build / init_params / describe_params / rules /
example_batch), uses logical axis names on its weights, and is registered under the name "toy"
by `register()`, with its loss added to the `codes` task.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from audiolm import config as config_lib
from audiolm.nn.params import init_params as nn_init_params, partitioned


class ToyLM(nn.Module):
    vocab: int
    width: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens):
        emb = self.param("embedding", partitioned(nn.initializers.normal(0.5), ("vocab", "embed")),
                         (self.vocab, self.width))
        x = emb[tokens].astype(self.dtype)
        w1 = self.param("w1", partitioned(nn.initializers.lecun_normal(), ("embed", "mlp")),
                        (self.width, 2 * self.width))
        b1 = self.param("b1", nn.initializers.zeros, (2 * self.width,))
        h = jax.nn.gelu(x @ w1 + b1)
        x = x + nn.Dense(self.width, name="out")(h)
        x = nn.LayerNorm(name="final_norm")(x)
        return x @ emb.T


FAMILY = "toy"


def build(model_config, dtype=jnp.float32):
    return ToyLM(model_config.vocab, model_config.width, dtype)


def init_params(model_config, rng):
    return nn_init_params(build(model_config), rng, jnp.zeros((1, model_config.length), jnp.int32))


def example_batch(model_config, batch_size, rng):
    # A learnable pattern: tokens follow t[i+1] = (t[i] + 1) % vocab from a random start.
    start = rng.integers(0, model_config.vocab, size=(batch_size, 1))
    tokens = (start + np.arange(model_config.length + 1)[None]) % model_config.vocab
    return {"tokens": tokens.astype(np.int32)}


def toy_loss(module, params, batch, rng, config, train):
    del rng, train
    tokens = batch["tokens"]
    logits = module.apply({"params": params}, tokens[:, :-1])
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    nll = -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
    loss = nll.mean() * config.train.loss.get("scale", 1.0)
    acc = (logits.argmax(-1) == tokens[:, 1:]).mean()
    return loss, {"accuracy": acc}


def describe_params(model_config):
    shapes = jax.eval_shape(lambda r: init_params(model_config, r), jax.random.PRNGKey(0))
    return {"toy": config_lib.count_params(shapes)}


def rules(config):
    config_lib.check_int(config, "model.vocab", lo=2)
    config_lib.check_int(config, "model.width", lo=1)
    config_lib.check_int(config, "model.length", lo=1)


def register():
    """Makes "toy" a known family that the `codes` task trains (idempotent)."""
    from audiolm.tasks import codes

    config_lib.FAMILIES.setdefault("toy", __name__)
    if "toy" not in config_lib.PAIRS["codes"]:
        config_lib.PAIRS["codes"] += ("toy",)
    codes.LOSSES["toy"] = toy_loss
    config_lib.register_rules("toy", rules)


def get_config(**train_overrides):
    """A full experiment config for the toy family (synthetic data, one device)."""
    from audiolm.presets import experiment

    register()
    config = experiment.base_config()
    config.model = ml_collections.ConfigDict(
        {"family": "toy", "vocab": 16, "width": 16, "length": 8})
    config.data.name = "synthetic"
    config.data.batch_size = 8
    config.train.steps = 6
    config.train.warmup_steps = 0
    config.train.learning_rate = 3e-2
    config.train.log_every = 1
    config.train.eval_every = 3
    config.train.eval_steps = 1
    config.train.checkpoint_every = 2
    config.mesh.axes.data = 1
    for key, value in train_overrides.items():
        config.train[key] = value
    return config
