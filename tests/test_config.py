"""Tests of the config helpers, arg parsing and the shared-section rules."""

import ml_collections
import pytest

from audiolm import config as config_lib
from audiolm.config import ConfigError
from audiolm.presets import experiment as common


def _cfg(**kw):
    return ml_collections.ConfigDict(kw)


def test_parse_arg_types_and_bare_variant():
    out = common.parse_arg("tiny,runlocal=True,steps=5,lr=0.5", variant="base", runlocal=False,
                           steps=1, lr=1.0)
    assert out.variant == "tiny" and out.runlocal is True and out.steps == 5 and out.lr == 0.5
    assert common.parse_arg(None, variant="base").variant == "base"


@pytest.mark.parametrize("arg,match", [
    ("bogus=1", "'bogus' is unknown"),
    ("steps=x", "steps='x': expected an int"),
    ("runlocal=maybe", "expected a bool"),
])
def test_parse_arg_errors(arg, match):
    with pytest.raises(ValueError, match=match):
        common.parse_arg(arg, variant="base", runlocal=False, steps=1)


def test_check_helpers_name_the_path():
    c = _cfg(model=_cfg(width=64, heads=5, name="x", drop=1.5))
    assert config_lib.check_int(c, "model.width", lo=1) == 64
    with pytest.raises(ConfigError, match=r"model.width=64: must be <= 32"):
        config_lib.check_int(c, "model.width", hi=32)
    with pytest.raises(ConfigError, match=r"model.drop=1.5: must be < 1"):
        config_lib.check_float(c, "model.drop", lo=0.0, hi=1.0, hi_open=True)
    with pytest.raises(ConfigError, match=r"model.missing is missing"):
        config_lib.get_path(c, "model.missing")
    with pytest.raises(ConfigError, match=r"model.name='x': must be one of \['a', 'b'\]"):
        config_lib.check_choice(c, "model.name", ["a", "b"])


def test_check_schema_unknown_missing_and_types():
    schema = {"a": 1, "b": 0.5, "c": "s", "d": True, "sub": {"e": 2}}
    good = _cfg(x=_cfg(a=3, b=2, c="t", d=False, sub=_cfg(e=4)))
    config_lib.check_schema(good, "x", schema)
    bad = _cfg(x=_cfg(a=3, b=2, c="t", d=False, sub=_cfg(e=4), extra=1))
    with pytest.raises(ConfigError, match=r"x.extra is not a known field"):
        config_lib.check_schema(bad, "x", schema)
    missing = _cfg(x=_cfg(a=3, b=2, c="t", sub=_cfg(e=4)))
    with pytest.raises(ConfigError, match=r"x.d is missing"):
        config_lib.check_schema(missing, "x", schema)
    typed = _cfg(x=_cfg(a=3.5, b=2, c="t", d=False, sub=_cfg(e=4)))
    with pytest.raises(ConfigError, match=r"x.a=3.5: must be an int"):
        config_lib.check_schema(typed, "x", schema)
    nested = _cfg(x=_cfg(a=3, b=2, c="t", d=False, sub=_cfg(e="no")))
    with pytest.raises(ConfigError, match=r"x.sub.e='no': must be an int"):
        config_lib.check_schema(nested, "x", schema)


def test_count_params_routed_fraction():
    import jax

    shapes = {"experts": {"wi": jax.ShapeDtypeStruct((8, 4, 2), "float32")},
              "embed": {"embedding": jax.ShapeDtypeStruct((10, 4), "float32")}}
    out = config_lib.count_params(
        shapes, routed=lambda p: 0.25 if p[0] == "experts" else 1.0,
        embedding=lambda p: p[0] == "embed")
    assert out == {"total": 64 + 40, "active": 16 + 40, "embedding": 40}
