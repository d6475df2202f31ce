"""Optional dependencies fail with an ImportError naming the extra that installs them."""

import sys

import pytest

from audiolm import extras


def test_missing_module_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(ImportError, match=r"pip install 'audiolm\[import\]'") as e:
        extras.require("safetensors.numpy", "import", "Importing Kyutai weights")
    assert "Importing Kyutai weights needs 'safetensors'" in str(e.value)


def test_importer_without_safetensors_says_how_to_install(monkeypatch, tmp_path):
    from audiolm.models import conditioners

    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(ImportError, match=r"audiolm\[import\]"):
        conditioners._read_safetensors(str(tmp_path))


def test_present_module_is_returned():
    assert extras.require("json", "import", "x").dumps([1]) == "[1]"
