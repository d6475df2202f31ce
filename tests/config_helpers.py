"""Helpers for tests that build invalid configs."""

import ml_collections


def set_field(config, path, value):
    """Sets the field at dotted `path`, bypassing ConfigDict's type safety (rebuilds the
    enclosing section), so that a test can give a field a value of the wrong type."""
    parts = path.split(".")
    parent = config
    for p in parts[:-2]:
        parent = parent[p]
    section = parent[parts[-2]].to_dict()
    section[parts[-1]] = value
    parent[parts[-2]] = ml_collections.ConfigDict(section)
