"""audiolm: multi-codebook audio language models in JAX/Flax.

Three families share one set of blocks (`audiolm.nn`): Thinker-Talker (Qwen3-Omni style),
temporal + depth transformers (Kyutai Moshi style) and pattern LMs (MusicGen style). What a
family learns is a task's business. The house, bottom to top (imports only go downwards;
`tests/test_layers.py` holds it):

  config      ConfigError, validate, describe; the registry of families, tasks, valid pairs
  patterns    codebook patterns as pure functions (the loss and the sampler share them)
  nn          blocks: norms, RoPE, attention + KV cache, MLP, MoE, convs, the transformer
              block, masked cross-entropy
  audio, data features and audio io; the embedded speech set, manifests, batching, tokenizers
  presets     named published models (the one place where published sizes are written)
  models      one file per component; a family module satisfies `models.family.Family`
  importers   Hugging Face / Kyutai / stable-audio-tools weights and configs -> ours
  sample      sampling rules and decode loops, streaming
  tasks       what is learnt: batches, loss, evaluators, sample writer (`tasks.base.Task`)
  train       the task-agnostic loop, checkpoints, metrics, the --mode=sample runner
  main        the absl launcher

Experiments are ml_collections config files under `configs/` (loaded by path, never imported
by the library), validated by `audiolm.config.validate` before anything is built.
"""

__version__ = "0.1.0"
