"""Markov navigation model: learning rate, batch top-5 latency and next-resource accuracy.

Workloads (seeded): ``msnbc`` = the training 80% of msnbc_first_half.seq (1.9M requests,
17 categories, each session its own user); ``wide`` = 2M requests of 100,000 users over
5,000 resources (Zipf 1.3), 1 ms apart, half-life 10 min. Rates land in
``benchmark.extra_info`` (transitions/s counts learned requests, as every request adds a
transition to its rows). Accuracy runs ``daemon.evaluate_markov.eval_markov`` on the real
files and records top-1/top-3 per model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bae_core.models.markov import Markov
from daemon.evaluate_markov import eval_markov, read_msnbc

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MSNBC = DATA / "msnbc" / "msnbc_first_half.seq"
NASA = DATA / "nasa-http" / "nasa_19950801.tsv"
PARAMS = dict(max_per_row=16, min_order2=2.0, min_order1=1.0, half_life_s=600.0,
              session_gap_s=1800.0, capacity=1024)


def _msnbc_batch():
    sessions, _ = read_msnbc(MSNBC)
    train = sessions[: int(len(sessions) * 0.8)]
    lens = np.array([len(s) for s in train])
    return {"user": np.repeat(np.arange(len(train), dtype=np.uint64), lens),
            "resource": np.concatenate(train)}


def _wide_batch(n=2_000_000, seed=0):
    rng = np.random.default_rng(seed)
    return {"user": rng.integers(0, 100_000, n).astype(np.uint64),
            "resource": rng.zipf(1.3, n).clip(1, 5000).astype(np.uint64),
            "ts_us": np.arange(n, dtype=np.int64) * 1000}


@pytest.fixture(scope="module")
def batches():
    return {"msnbc": _msnbc_batch(), "wide": _wide_batch()}


@pytest.mark.parametrize("workload,warm", [("msnbc", False), ("msnbc", True),
                                           ("wide", False), ("wide", True)])
def test_learn_rate(benchmark, batches, workload, warm):
    """Requests learned per second: into a fresh model (rows and maps growing as they
    go) or a warm one (the same stream again, shifted in time)."""
    b = batches[workload]
    n = len(b["user"])

    def fresh():
        return (Markov(**PARAMS), b), {}

    def again():
        m = Markov(**PARAMS)
        m.learn(b)
        b2 = dict(b)
        if "ts_us" in b:
            b2["ts_us"] = b["ts_us"] + int(b["ts_us"][-1]) + 1
        return (m, b2), {}

    benchmark.pedantic(lambda m, bb: m.learn(bb), setup=again if warm else fresh,
                       rounds=3, iterations=1)
    rate = n / benchmark.stats.stats.median
    benchmark.extra_info["transitions_per_s"] = rate
    print(f"\nlearn {workload} {'warm' if warm else 'fresh'}: {rate / 1e6:.2f}M/s")


@pytest.mark.parametrize("workload", ["msnbc", "wide"])
def test_top5_for_100k_users(benchmark, batches, workload):
    b = batches[workload]
    m = Markov(**PARAMS)
    m.learn(b)
    users = np.unique(b["user"])[-100_000:]  # the latest sessions (msnbc), all (wide)
    q = {"users": users, "k": 5}
    m.predict(q)
    out = benchmark.pedantic(m.predict, args=(q,), rounds=10, iterations=1)
    assert out["resource"].shape == (100_000, 5)
    ms = benchmark.stats.stats.median * 1e3
    benchmark.extra_info["top5_100k_ms"] = ms
    print(f"\ntop-5 for 100,000 users ({workload}): {ms:.1f} ms")


def test_accuracy(benchmark):
    r = {}

    def run():
        r["msnbc"] = eval_markov(MSNBC, "msnbc")
        r["nasa"] = eval_markov(NASA, "nasa")
    benchmark.pedantic(run, rounds=1, iterations=1)
    for name, res in r.items():
        for model, s in res["models"].items():
            benchmark.extra_info[f"{name}.{model}"] = s
            print(f"\n{name} {model}: top1 {s['top1']:.4f} top3 {s['top3']:.4f}", end="")
    ms, nasa = r["msnbc"]["models"], r["nasa"]["models"]
    assert ms["markov"]["top1"] >= 0.65 and ms["markov"]["top3"] >= 0.80
    assert ms["markov"]["top1"] > ms["first_order"]["top1"]
    assert ms["markov"]["top3"] > ms["first_order"]["top3"]
    assert nasa["markov"]["top3"] >= 0.35
