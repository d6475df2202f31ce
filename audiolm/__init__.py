"""audiolm: multi-codebook audio language models in JAX/Flax.

Three families share one set of blocks (`audiolm.nn`): Thinker-Talker (Qwen3-Omni style),
temporal + depth transformers (Kyutai Moshi style) and pattern LMs (MusicGen style).
Everything is built from ml_collections configs validated by `audiolm.config.validate`.
"""

__version__ = "0.1.0"
