"""Model families. `registry.build(model_config)` builds any of them from its config."""
