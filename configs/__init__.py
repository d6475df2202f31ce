"""Experiment configs: one file per model family, `get_config(arg)` in each."""
