"""Audio input/output (`io`) and features (`features`); import the submodules directly."""
