"""LSTM throughput on the CUDA execution provider, when there is one.

    python perf/gpu_check.py [--model models/bae_lstm_v1.onnx] [--batches 256,4096,65536]

Prints one JSON object: the device, per batch the sequences/s of the model alone (features
ready) and of ``LSTMRuntime.predict`` end to end, and the max abs difference of the CUDA
p50/p90/p99 from the CPU ones. With no CUDA provider in this onnxruntime (the CPU wheel,
or no GPU) it says so and exits 0: there is nothing to check.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import features as F  # noqa: E402
from test_lstm import _median_s  # noqa: E402  (perf/ is this script's folder)
from models.runtime import CUDA, DEFAULT_MODEL, LSTMRuntime  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--batches", default="1,256,4096,65536")
    ap.add_argument("--rounds", type=int, default=10)
    a = ap.parse_args(argv)
    import onnxruntime as ort
    have = ort.get_available_providers()
    if CUDA not in have:
        print(f"gpu_check: no CUDAExecutionProvider in this onnxruntime {ort.__version__} "
              f"(providers: {', '.join(have)}); install onnxruntime-gpu on a machine with "
              "an NVIDIA GPU to check the CUDA path. Nothing to do.")
        return 0
    batches = [int(b) for b in a.batches.split(",")]
    gpu = LSTMRuntime(a.model, device="cuda", max_batch=max(batches))
    if gpu.providers[0] != CUDA:
        print(f"gpu_check: the CUDA provider is listed but did not start (session "
              f"providers: {gpu.providers}); check the CUDA/cuDNN libraries. Nothing to do.")
        return 0
    cpu = LSTMRuntime(a.model, device="cpu", threads=2, max_batch=max(batches))
    sess = gpu._sess
    rng = np.random.default_rng(0)
    res = {"device": ort.get_device(), "onnxruntime": ort.__version__,
           "providers": gpu.providers, "batches": {}}
    for b in batches:
        t = np.arange(F.HISTORY)
        h = (rng.uniform(1, 1000, (b, 1)) * (1.5 + np.sin(2 * np.pi * t / 288))
             ).astype(np.float32)
        steps = np.arange(b)
        x = F.build_features(h, steps)[0]
        model_s = _median_s(lambda: sess.run(["q"], {"x": x}), a.rounds)
        e2e_s = _median_s(lambda: gpu.predict(h, steps), a.rounds)
        g = gpu.predict(h, steps)
        c = cpu.predict(h[:4096], steps[:4096])
        diff = max(float(np.abs(g[k][:4096] - c[k]).max() / max(1.0, np.abs(c[k]).max()))
                   for k in c)
        res["batches"][b] = {"model_only_sequences_per_s": round(b / model_s),
                             "predict_sequences_per_s": round(b / e2e_s),
                             "max_rel_diff_vs_cpu": diff}
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
