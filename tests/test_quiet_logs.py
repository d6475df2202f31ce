"""audiolm.main keeps library INFO lines (Orbax, JAX) out of the logs unless --verbosity asks."""

import logging as std_logging
import os

import orbax.checkpoint
from absl import flags, logging

import audiolm
from audiolm import main


def _record(path, level=std_logging.INFO):
    return std_logging.LogRecord("absl", level, path, 1, "message", None, None)


def _filters_after(argv):
    handler = logging.get_absl_handler()
    before = list(handler.filters)
    verbosity = logging.get_verbosity()  # parsing the flags sets absl's level; put it back after
    flags.FLAGS.unparse_flags()
    flags.FLAGS(argv)
    try:
        main._quiet_library_logs()
        return [f for f in handler.filters if f not in before]
    finally:
        for f in handler.filters[len(before):]:
            handler.removeFilter(f)
        flags.FLAGS.unparse_flags()
        logging.set_verbosity(verbosity)


def test_library_info_dropped_by_default():
    (keep,) = _filters_after(["main", "--config=configs/moshi.py:tiny"])
    orbax_file = os.path.join(os.path.dirname(orbax.checkpoint.__file__), "checkpoint_manager.py")
    ours = os.path.join(os.path.dirname(audiolm.__file__), "train", "metrics.py")
    assert not keep(_record(orbax_file))
    assert keep(_record(orbax_file, std_logging.WARNING))
    assert keep(_record(ours))


def test_launcher_script_lines_kept(tmp_path):
    from audiolm.train.metrics import quiet_library_logs

    handler = logging.get_absl_handler()
    script = str(tmp_path / "sweep.py")
    quiet_library_logs(script)
    keep = handler.filters[-1]
    try:
        assert keep(_record(script)) and not keep(_record(str(tmp_path / "other.py")))
    finally:
        handler.removeFilter(keep)


def test_verbosity_flag_keeps_everything():
    assert _filters_after(["main", "--config=configs/moshi.py:tiny", "--verbosity=0"]) == []
