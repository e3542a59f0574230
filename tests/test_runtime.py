"""models.runtime on real onnxruntime sessions: predict, hot reload and its refusals, the
CUDA fallback, the inference worker; and the `lstm` forecaster of `bae eval forecast`."""

from __future__ import annotations

import logging
import shutil
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from daemon.evaluate import eval_forecast
from models import export
from models import features as F
from models.runtime import (CUDA, DEFAULT_MODEL, InferenceWorker, LSTMRuntime,
                            ModelFileError)
from tests.conftest import DATA

NAB = DATA / "nab" / "data" / "realAWSCloudwatch" / "elb_request_count_8c0756.csv"


def _histories(n: int, length: int = F.HISTORY, seed: int = 0) -> np.ndarray:
    """n daily waves at different levels plus noise, float32[n, length]."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    level = rng.uniform(1, 1000, (n, 1))
    wave = 1 + 0.5 * np.sin(2 * np.pi * (t + rng.integers(0, 288, (n, 1))) / 288)
    return (level * wave * rng.uniform(0.9, 1.1, (n, length))).astype(np.float32)


@pytest.fixture(scope="module")
def rt():
    return LSTMRuntime(DEFAULT_MODEL, device="cpu", threads=1, max_batch=64)


def test_predict_shapes_order_and_chunking(rt):
    h = _histories(150)  # > max_batch: three chunks
    out = rt.predict(h, np.arange(150) + 10_000)
    assert set(out) == {"p50", "p90", "p99"}
    for v in out.values():
        assert v.shape == (150, F.HORIZON) and v.dtype == np.float32
        assert np.isfinite(v).all() and (v >= 0).all()
    assert (out["p50"] <= out["p90"]).all() and (out["p90"] <= out["p99"]).all()
    one = rt.predict(h[100:101], 10_100)  # row 100 alone = row 100 of the batch
    np.testing.assert_allclose(one["p50"][0], out["p50"][100], rtol=1e-5)
    # forecasts follow the level of each series
    assert np.corrcoef(out["p50"][:, 0], h[:, -1])[0, 1] > 0.95


def test_predict_equals_features_through_the_session(rt):
    h = _histories(8, seed=1)
    x, mu, sc = F.build_features(h, 5)
    q = ort.InferenceSession(str(DEFAULT_MODEL)).run(["q"], {"x": x})[0]
    np.testing.assert_allclose(rt.predict(h, 5)["p90"], F.denormalise(q, mu, sc)[:, 1],
                               rtol=1e-5, atol=1e-4)


def test_short_and_nan_padded_histories(rt):
    h = _histories(4, 40)
    h[0, :20] = np.nan  # a series seen for 20 steps only, as window_into pads
    h[1, :] = np.nan  # never seen
    h[2, :] = 3.0  # constant
    out = rt.predict(h[:, -F.WINDOW:].copy(), 0)
    assert np.isfinite(out["p99"]).all()
    np.testing.assert_allclose(out["p50"][2], 3.0, rtol=0.2)
    with pytest.raises(ValueError, match=r"float\[n, >= 32\]"):
        rt.predict(h[:, :10], 0)


def _wrong_shape_model(path, n_features=8):
    """A valid ONNX file with BAE's names and metadata but input [batch, 32, 8]."""
    import torch

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(n_features, 3 * F.HORIZON)

        def forward(self, x):
            return self.lin(x[:, -1]).reshape(-1, 3, F.HORIZON)

    torch.manual_seed(0)
    m = M().eval()
    with export.quiet_export():
        torch.onnx.export(m, (torch.zeros(2, F.WINDOW, n_features),), str(path),
                          input_names=["x"], output_names=["q"], opset_version=17,
                          dynamic_axes={"x": {0: "b"}, "q": {0: "b"}}, dynamo=False)
    proto = onnx.load(str(path))
    for k, v in export.model_metadata("test").items():
        proto.metadata_props.add(key=k, value=v)
    onnx.save(proto, str(path))
    return path


def test_hot_reload_accepts_a_good_file_and_refuses_bad_ones(tmp_path):
    rt = LSTMRuntime(DEFAULT_MODEL, device="cpu", max_batch=16)
    h = _histories(3)
    before = rt.predict(h, 0)["p50"]
    good = shutil.copy(DEFAULT_MODEL, tmp_path / "v2.onnx")
    rt.reload(good)
    assert rt.path == good
    np.testing.assert_array_equal(rt.predict(h, 0)["p50"], before)

    wrong = _wrong_shape_model(tmp_path / "wrong.onnx")
    with pytest.raises(ModelFileError, match=r"input shape \['b', 32, 8\]"):
        rt.reload(wrong)

    proto = onnx.load(str(DEFAULT_MODEL))
    for p in proto.metadata_props:
        if p.key == "bae.horizon":
            p.value = "24"
    onnx.save(proto, str(tmp_path / "h24.onnx"))
    with pytest.raises(ModelFileError, match="metadata bae.horizon='24'"):
        rt.reload(tmp_path / "h24.onnx")

    raw = DEFAULT_MODEL.read_bytes()
    (tmp_path / "cut.onnx").write_bytes(raw[:len(raw) // 2])
    (tmp_path / "junk.onnx").write_bytes(b"this is not a model\x00" * 50)
    for bad in ("cut.onnx", "junk.onnx", "missing.onnx"):
        with pytest.raises(ModelFileError, match="bae train lstm"):
            rt.reload(tmp_path / bad)
    assert rt.path == good  # the good model kept serving through every refusal
    np.testing.assert_array_equal(rt.predict(h, 0)["p50"], before)
    with pytest.raises(ModelFileError, match="input shape"):
        LSTMRuntime(wrong)


def test_cuda_request_without_cuda_falls_back_to_cpu_with_a_message(caplog):
    with caplog.at_level(logging.WARNING, logger="bae.models"):
        rt = LSTMRuntime(DEFAULT_MODEL, device="cuda", max_batch=4)
    if CUDA in ort.get_available_providers():  # a GPU build: it must really use it
        assert rt.providers[0] == CUDA or "failed to start" in caplog.text
    else:
        assert rt.providers == ["CPUExecutionProvider"]
        assert "CUDA was requested but this onnxruntime has no CUDAExecutionProvider" \
            in caplog.text and "serving on the CPU" in caplog.text
    assert rt.predict(_histories(2), 0)["p50"].shape == (2, F.HORIZON)


def test_inference_worker_publishes_and_survives_errors():
    rt = LSTMRuntime(DEFAULT_MODEL, device="cpu", max_batch=256)
    h = _histories(300)
    calls = {"n": 0}

    def source():
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("source broke once")
        return list(range(300)), h, np.arange(300)

    w = InferenceWorker(rt, source, interval_s=0.01, chunk=128)
    logging.getLogger("bae.models").disabled = True
    try:
        w.start()
        deadline = time.monotonic() + 20
        while (w.latest is None or w.latest["seq"] < 3) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        w.stop()
        logging.getLogger("bae.models").disabled = False
    assert not w.is_alive()
    snap = w.latest
    assert snap["seq"] >= 3 and w.errors >= 1
    assert snap["p50"].shape == (300, F.HORIZON) and len(snap["keys"]) == 300
    np.testing.assert_allclose(snap["p99"], rt.predict(h, np.arange(300))["p99"], rtol=1e-5)


def test_lstm_forecaster_in_eval_forecast():
    res = eval_forecast(NAB, "value", "timestamp", 300, season=288, horizon=30,
                        models=["lstm", "seasonal_naive"], origins=4)
    r = res["models"]["lstm"]
    assert res["notes"] == [] and np.isfinite(r["mase"]) and r["mase"] < 2
    assert 0 <= r["p90_coverage"] <= 1
