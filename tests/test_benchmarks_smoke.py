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
