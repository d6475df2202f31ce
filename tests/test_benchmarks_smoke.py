"""Smoke test of the benchmark scripts: each `main` runs end to end at its smallest sizes (one
layer, batch 1, a few tokens / frames, one repeat, XLA backend optimisation off) and returns
finite, positive timings. Speed itself is never asserted here (experiments/ measures it).
Inside the scripts, ours must match the reference (logits, greedy tokens) or they exit."""

import math

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")


def _check(rows, keys):
    assert rows
    for row in rows:
        for key in keys:
            value = row[key]
            assert math.isfinite(value) and value > 0, (row, key)


def test_bench_thinker_main_runs(tmp_path):
    import json

    from experiments import bench_thinker

    out = tmp_path / "thinker.json"
    res = bench_thinker.main(["--config=tiny", "--layers=1", "--batch=1", "--seq=8",
                              "--repeats=1", "--warmup=0", "--fast-compile",
                              f"--json={out}"])
    assert [r["op"] for r in res["rows"]] == ["fwd", "fwd+bwd"]
    _check(res["rows"], ("ref_s", "ours_s", "ours_first_s", "ref_tok_s", "ours_tok_s",
                         "speedup"))
    assert res["rows"][0]["max_logit_err"] <= 1e-3  # same weights on both sides
    assert json.loads(out.read_text())["rows"][1]["op"] == "fwd+bwd"


def test_bench_decode_main_runs():
    pytest.importorskip("moshi")
    from experiments import bench_decode

    res = bench_decode.main(["--size=tiny", "--layers=1", "--batches=1", "--prompt=4",
                             "--new-tokens=4", "--frames=4", "--c2w-frames=3", "--c2w-chunk=3",
                             "--c2w-context=2", "--repeats=1", "--warmup=0", "--fast-compile"])
    rows = res["rows"]
    assert {r["part"] for r in rows} == set(bench_decode.PARTS)
    _check(rows, ("ref_s", "ours_s", "ours_first_s", "ref_rate", "ours_rate", "speedup"))
    for r in rows:
        if r["part"] != "code2wav":  # greedy tokens equal to the reference's
            assert r["match"] == r["steps"], r


def test_bench_train_main_runs(tmp_path):
    import json

    from experiments import bench_train

    out = tmp_path / "train.json"
    res = bench_train.main(["--size=tiny", "--layers=1", "--batch=1", "--seq=8", "--repeats=1",
                            "--cases=thinker_moe,talker_moe", "--dispatch=dropless,capacity",
                            "--fast-compile", f"--json={out}"])
    rows = res["rows"]
    assert [(r["case"], r["dispatch"]) for r in rows] == [
        ("thinker_moe", "dropless"), ("thinker_moe", "capacity"),
        ("talker_moe", "dropless"), ("talker_moe", "capacity")]
    _check(rows, ("step_s", "first_s", "tokens_per_s", "model_flops", "xla_flops", "mfu",
                  "loss"))
    # The model FLOPs depend on the model only, not on how tokens reach the experts.
    assert rows[0]["model_flops"] == rows[1]["model_flops"] != rows[2]["model_flops"]
    assert json.loads(out.read_text())["peak_source"].startswith("measured")


def test_hbm_fraction_counts_weights_and_kv_cache(monkeypatch):
    import jax.numpy as jnp

    from audiolm.models import thinker_talker
    from audiolm.presets import thinker_talker as presets
    from experiments import bench_decode, bench_train

    monkeypatch.setattr(bench_train, "hbm_bandwidth", lambda: ("test", 1e9))
    model_config = presets.PRESETS["tiny"]()
    th = model_config.thinker
    params = {"thinker": {"w": jnp.zeros((2,), jnp.float32)}}
    comp = thinker_talker.describe_params(model_config)["thinker"]
    per_expert = (comp["total"] - comp["active"]) / (th.num_experts - th.num_experts_per_tok)
    kv = 2 * th.num_layers * th.num_kv_heads * th.head_dim * (4 + 8 / 2)
    # batch 1: the active weights; 8 new tokens in 0.008 s = 1 ms per step.
    want = (comp["active"] - comp["embedding"] + kv) * 4 / 1e-3 / 1e9
    got = bench_decode.hbm_fraction(model_config, params, 1, 4, 8, 0.008)
    assert abs(got - want) < 1e-9 * want
    # batch 2 touches top_k more experts per MoE layer, and twice the KV cache.
    want2 = (comp["active"] - comp["embedding"] + th.num_experts_per_tok * per_expert
             + 2 * kv) * 4 / 1e-3 / 1e9
    assert abs(bench_decode.hbm_fraction(model_config, params, 2, 4, 8, 0.008) - want2) < 1e-6
    monkeypatch.setattr(bench_train, "hbm_bandwidth", lambda: ("cpu", None))
    assert bench_decode.hbm_fraction(model_config, params, 1, 4, 8, 0.008) is None
