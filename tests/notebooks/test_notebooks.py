"""Executes every notebook of notebooks/ top to bottom and checks its outputs: plots are
`image/png` outputs, audio players `IPython.display.Audio` outputs (`text/html` with an
`<audio>` tag), tables have their rows."""

import os
import re

import pytest

import tests.compile_cache  # noqa: F401  (the kernels inherit the cache through the environment)

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOKS = os.path.join(ROOT, "notebooks")


def _execute(name, monkeypatch):
    """Runs notebooks/<name>.ipynb in a fresh kernel with one CPU device (like a Colab CPU
    runtime); returns the executed code cells. A cell that raises fails here with its error."""
    monkeypatch.setenv("XLA_FLAGS", "")  # not the suite's 8 fake devices
    path = os.path.join(NOTEBOOKS, f"{name}.ipynb")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": NOTEBOOKS}})
    client.execute()
    cells = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in cells for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    return cells


def _outputs(cell, mime):
    return [o["data"][mime] for o in cell.outputs if mime in o.get("data", {})]


def _text(cell):
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def test_all_notebooks_are_tested():
    names = sorted(f[:-len(".ipynb")] for f in os.listdir(NOTEBOOKS) if f.endswith(".ipynb"))
    assert names == ["asr", "import_pretrained", "patterns", "quickstart"]


def test_every_notebook_starts_with_the_colab_install_cell():
    for name in ("asr", "import_pretrained", "patterns", "quickstart"):
        nb = nbformat.read(os.path.join(NOTEBOOKS, f"{name}.ipynb"), as_version=4)
        setup = next(c for c in nb.cells if c.cell_type == "code").source
        assert "'google.colab' in sys.modules" in setup and "pip', 'install'" in setup
        assert "%matplotlib inline" in setup
        source = "\n".join(c.source for c in nb.cells)
        assert "JAX_PLATFORMS" not in source and "matplotlib.use" not in source


def test_quickstart(monkeypatch):
    setup, describe, train, plot = _execute("quickstart", monkeypatch)
    assert "devices: [CpuDevice(id=0)]" in _text(setup)  # the runtime's device, not forced
    assert re.search(r"TOTAL\s+[\d,]{13,}", _text(describe))  # billions of parameters
    assert "train loss by step:" in _text(train)
    (png,) = _outputs(plot, "image/png")
    assert len(png) > 1000


def test_patterns(monkeypatch):
    from audiolm import patterns

    _, render, draw, table = _execute("patterns", monkeypatch)
    text = _text(render)
    for kind in patterns.KINDS:
        assert f"'{kind}'" in text or kind in text
    assert text.count("q3 ") == len(patterns.KINDS)  # a 4-codebook grid per kind
    (png,) = _outputs(draw, "image/png")
    assert len(png) > 10000
    (html,) = _outputs(table, "text/html")
    assert html.count("<tr>") == 1 + len(patterns.KINDS)


def test_asr(monkeypatch):
    """Also: the tiny ASR run's TensorBoard directory holds the test utterances' audio, log-mel
    images and transcripts."""
    from tests.train.test_metrics import read_events

    _, train, listen, read, curves = _execute("asr", monkeypatch)
    assert re.search(r"test \{.*'cer': [\d.]+", _text(train))
    logdir = re.search(r"TensorBoard .*: (\S+)", _text(train)).group(1)
    tags = read_events(logdir)
    audio = [v.audio for t, e in tags.items() for _, v in e if v.HasField("audio")]
    images = [v.image for t, e in tags.items() for _, v in e if v.HasField("image")]
    assert len(audio) == 3 and all(a.sample_rate == 16000 and a.length_frames > 1600
                                   for a in audio)
    assert len(images) == 3 and all(i.height == 128 and i.width > 10 for i in images)
    ((_, text),) = tags["test/transcripts/text_summary"]
    assert text.tensor.string_val[0].decode().count("\n") == 1 + 4  # header, rule, 4 rows
    assert {"train/loss", "eval/loss", "test/cer"} <= set(tags)
    players = _outputs(listen, "text/html")
    assert len(players) == 2 and all("<audio" in p and "base64" in p for p in players)
    (table,) = _outputs(read, "text/html")
    assert table.count("<tr>") == 1 + 4  # header + the 4 test utterances
    (png,) = _outputs(curves, "image/png")
    assert len(png) > 1000


def test_import_pretrained(monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    _, make, imported, compare = _execute("import_pretrained", monkeypatch)
    assert "model.safetensors" in _text(make)
    counts = re.search(r"parameters: transformers ([\d,]+), imported ([\d,]+)", _text(imported))
    assert counts and counts.group(1) == counts.group(2)
    (table,) = _outputs(compare, "text/html")
    assert table.count("<tr>") == 4
    max_diff = float(re.search(r"max \|diff\|</td><td>([\d.e+-]+)", table).group(1))
    assert max_diff <= 1e-4  # the importer test's tolerance
    (png,) = _outputs(compare, "image/png")
    assert len(png) > 1000
