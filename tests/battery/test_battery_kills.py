"""Battery: a process writing checkpoints is SIGKILLed at random moments, including in the middle
of an asynchronous save; the next start resumes from the newest complete checkpoint (params and
data state of one and the same step), warning by name about any damaged folder. Few, tiny runs:
each subprocess costs an interpreter with jax and Orbax."""

import os
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from audiolm.train import checkpoint as ckpt_lib
from audiolm.train.state import TrainState

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Saves steps 1.. (params filled with the step number, 64k floats so a save takes a moment),
# asynchronously; KILL_AT_SAVE kills itself right after save() of that step returns, i.e. while
# Orbax is still writing it in the background.
WRITER = textwrap.dedent("""
    import os, signal, sys, time
    sys.path.insert(0, {root!r})
    import jax, jax.numpy as jnp, ml_collections, optax
    from audiolm.train import checkpoint as ckpt_lib
    from audiolm.train.state import TrainState
    workdir, kill_at_save = sys.argv[1], int(sys.argv[2])
    train = ml_collections.ConfigDict(dict(keep_checkpoints=3, checkpoint_every=1))
    ckpt = ckpt_lib.Checkpointer(workdir, train, async_save=True)
    start = (ckpt.latest_step() or 0) + 1
    print("ready", flush=True)
    for step in range(start, 1000):
        params = {{"w": jnp.full((256, 256), float(step))}}
        state = TrainState.create(params, optax.sgd(0.1), jax.random.PRNGKey(0))
        ckpt.save(step, state, {{"index": step}})
        if step == kill_at_save:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.01)
""")


def _abstract():
    import optax

    return jax.eval_shape(lambda: TrainState.create({"w": jnp.zeros((256, 256))},
                                                    optax.sgd(0.1), jax.random.PRNGKey(0)))


def _resume(workdir):
    train = ml_collections.ConfigDict(dict(keep_checkpoints=3, checkpoint_every=1))
    ckpt = ckpt_lib.Checkpointer(workdir, train, async_save=False)
    try:
        if ckpt.latest_step() is None:
            return None, None, []
        state, data, step = ckpt.restore(_abstract())
        return state, data, list(ckpt.skipped)
    finally:
        ckpt.close()


def _run_writer(workdir, kill_at_save=0, kill_after=None):
    """Runs the writer; kills it after `kill_after` seconds past its start-up, if given."""
    script = WRITER.format(root=ROOT)
    proc = subprocess.Popen([sys.executable, "-c", script, workdir, str(kill_at_save)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})
    if kill_after is not None:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()[-2000:]
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=120)
    return proc.returncode


def _assert_consistent(state, data):
    step = data["index"]
    np.testing.assert_array_equal(np.asarray(state["params"]["w"]),
                                  np.full((256, 256), float(step), np.float32))
    assert int(state["step"]) == 0  # TrainState.create: the saved state is the one written


def test_kill_in_the_middle_of_a_save_resumes_from_the_previous(tmp_path):
    workdir = str(tmp_path)
    assert _run_writer(workdir, kill_at_save=3) == -signal.SIGKILL
    state, data, skipped = _resume(workdir)
    assert data is not None and data["index"] in (2, 3)  # 3 only if its write had finished
    _assert_consistent(state, data)
    for message in skipped:
        assert workdir in message and "incomplete or corrupt" in message


@pytest.mark.parametrize("seed", [0, 1])
def test_kill_at_random_moments_then_resume_and_continue(tmp_path, seed):
    workdir = str(tmp_path)
    delays = np.random.default_rng(seed).uniform(0.05, 0.6, size=2)
    last = 0
    for delay in delays:
        _run_writer(workdir, kill_after=float(delay))
        state, data, _ = _resume(workdir)
        if data is None:  # killed before its first checkpoint was complete
            continue
        _assert_consistent(state, data)
        assert data["index"] >= last  # never goes back past a complete checkpoint
        last = data["index"]
