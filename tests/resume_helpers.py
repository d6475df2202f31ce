"""Helpers of the tests that stop the training loop and resume it: the logged losses, the
restored state, a run stopped by an exception or killed with SIGKILL in a given step."""

import os
import subprocess
import sys
import textwrap

import jax
import pytest

from audiolm.train import checkpoint as ckpt_lib
from audiolm.train import loop, metrics as metrics_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def losses(workdir, split="train", keys=("loss",)):
    """[(step, *values of `keys`)] of the `split` records of the run's metrics file."""
    return [(r["step"], *(r[k] for k in keys)) for r in metrics_lib.read_metrics(workdir, split)]


def restore(config, workdir):
    """(state, data_state, step) of the newest checkpoint in `workdir`, on the host."""
    exp = loop.build(config)
    ckpt = ckpt_lib.Checkpointer(workdir, config.train)
    try:
        state, data_state, step = ckpt.restore(exp.abstract_state)
    finally:
        ckpt.close()
    return jax.device_get(state), data_state, step


def restored_params(config, workdir):
    """The params of the newest checkpoint in `workdir`, on the host."""
    return restore(config, workdir)[0]["params"]


def run_crashed(config, workdir, step):
    """Runs the loop on `config`, raising in the callback of `step` (after its update and
    metrics, before a checkpoint of it), and checks that the exception came out."""

    def crash(s, state, metrics):
        if s == step:
            raise RuntimeError("injected crash")

    with pytest.raises(RuntimeError, match="injected crash"):
        loop.run(config, workdir, callbacks=[crash])


def run_killed(workdir, module_file, factory, *args, step=5, timeout=900, **kwargs):
    """Runs the loop on `factory(*args, **kwargs)` in a subprocess that SIGKILLs itself in the
    callback of `step` (its metrics logged, not checkpointed), and checks that it died so.
    `factory` is a function of the module at `module_file` (imported by name from its folder);
    its arguments travel as their repr."""
    module = os.path.splitext(os.path.basename(module_file))[0]
    call = ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()])
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path[:0] = [{ROOT!r}, {os.path.dirname(os.path.abspath(module_file))!r}]
        from {module} import {factory}
        from audiolm.train import loop

        def kill(step, state, metrics):
            if step == {step!r}:
                os.kill(os.getpid(), signal.SIGKILL)

        loop.run({factory}({call}), {workdir!r}, callbacks=[kill])
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == -9, proc.stderr[-3000:]
