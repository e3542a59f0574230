"""The daemon serves the LSTM through onnxruntime as an ensemble member: its forecasts
join the others, the weights show in the API and the deltas, and a changed model file is
checked and hot-reloaded (a bad one is refused while the old one keeps serving)."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest

from bae_core import wire
from daemon.client import DeltaSubscriber, EventPublisher
from models.runtime import DEFAULT_MODEL

from .test_daemon import requests, service_names

pytestmark = pytest.mark.slow


def test_lstm_joins_the_ensemble_and_hot_reloads(start_daemon, tmp_path):
    model = tmp_path / "lstm.onnx"
    shutil.copy(DEFAULT_MODEL, model)
    d = start_daemon({"model": {"bucket_s": 0.1, "seasonal_bucket_s": 1.0, "late_buckets": 1,
                                "lstm_path": str(model), "lstm_interval_s": 1.0},
                      "policy": {"tick_s": 0.1}})
    sub = DeltaSubscriber(d.publish, d.snapshot)
    rng = np.random.default_rng(0)
    with EventPublisher(d.ingest) as pub:
        pub.send_frame(wire.MsgType.NAME, service_names([1], ["web"]))
        deadline = time.monotonic() + 25
        weights, reasons = {}, []
        while time.monotonic() < deadline:
            # a swinging load: the allocation keeps changing, so deltas keep coming
            n = int(30 + 25 * np.sin(time.monotonic() * 2) + rng.integers(0, 5))
            pub.send_frame(wire.MsgType.REQUEST, requests(n, services=(1,)))
            time.sleep(0.05)
            reasons += [int(r["reasons"]) for h, recs in sub.poll(0.0)
                        if h.type == wire.MsgType.ALLOCATION for r in recs]
            f = d.get("/v1/services/web/forecast?horizon=4")["models"]["ensemble"]
            weights = f["weights"]
            if weights["lstm"] > 0 and weights["holt_winters"] > 0 and \
                    any(r & wire.Reason.MODEL_LSTM or r & wire.Reason.MODEL_HOLT_WINTERS
                        for r in reasons):
                break
    assert weights["lstm"] > 0 and weights["holt_winters"] > 0, weights
    assert abs(sum(weights.values()) - 1.0) < 1e-3
    # the deltas name the leading forecaster
    assert any(r & (wire.Reason.MODEL_LSTM | wire.Reason.MODEL_HOLT_WINTERS) for r in reasons)
    # a broken file is refused and counted; the old model keeps serving
    model.write_bytes(b"not an onnx model")
    d.wait_for(lambda s: s["model_failures"] >= 1, what="bad model refused")
    assert d.get("/readyz") is not None
    shutil.copy(DEFAULT_MODEL, model)
    d.wait_for(lambda s: s["model_reloads"] >= 1, what="good model reloaded")
    sub.close()
    assert d.stop() == 0


def test_prophet_refits_in_a_worker_process_join_the_ensemble(start_daemon):
    d = start_daemon({"model": {"bucket_s": 0.1, "seasonal_bucket_s": 1.0, "late_buckets": 1,
                                "lstm": False, "prophet": True, "prophet_interval_s": 60.0},
                      "policy": {"tick_s": 0.1}})
    rng = np.random.default_rng(1)
    with EventPublisher(d.ingest) as pub:
        pub.send_frame(wire.MsgType.NAME, service_names([1], ["web"]))
        deadline = time.monotonic() + 90
        weights = {}
        while time.monotonic() < deadline:
            n = int(30 + 20 * np.sin(time.monotonic()) + rng.integers(0, 5))
            pub.send_frame(wire.MsgType.REQUEST, requests(n, services=(1,)))
            time.sleep(0.1)
            weights = d.get("/v1/services/web/forecast?horizon=4")["models"]["ensemble"][
                "weights"]
            if weights["prophet"] > 0:
                break
    assert weights["prophet"] > 0 and weights["lstm"] == 0, weights
    d.wait_for(lambda s: s["prophet_refits"] >= 1, timeout_s=60, what="segments refitted")
    seg = d.get("/v1/segments/0")["models"]  # users without a profile: segment 0
    assert len(seg["prophet"]["p50"]) == 12 and set(seg) == {"holt_winters", "arima",
                                                             "prophet"}
    assert d.stop() == 0
