"""Serving the LSTM forecaster with onnxruntime: ``LSTMRuntime`` and ``InferenceWorker``.

``LSTMRuntime(path)`` opens a BAE LSTM ONNX file (see ``models.export``) on the CUDA
execution provider when onnxruntime offers it (``device="auto"``), else on the CPU with
``threads`` intra-op threads. ``predict(history, steps)`` builds the features with
``models.features`` into a preallocated input buffer, runs the model bound to
preallocated buffers (IOBinding) in chunks of at most ``max_batch`` rows, and returns raw
p50/p90/p99 forecasts float32[n, HORIZON]. ``reload(path)`` swaps in a new file only after
it passed every check; a bad file raises ``ModelFileError`` and the old model keeps
serving.

Threads: ``predict`` and ``reload`` may be called from any thread (a lock serialises
them and guards the buffers); onnxruntime releases the GIL while it runs. The daemon's
event loop should only read ``InferenceWorker.latest``. Give the session at most cores - 1
intra-op threads so the loop keeps a core (perf/test_lstm.py: on 2 cores, 1 thread kept
the loop's p99 lag at 0.3 ms, 2 threads let it reach 3-9 ms); idle threads do not spin.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from bae_core.errors import BAEError
from models import features as F

log = logging.getLogger("bae.models")

INPUT, OUTPUT = "x", "q"  # = models.export.INPUT/OUTPUT (export imports torch/onnx)
FORMAT = "bae-lstm-quantile/1"
MIN_OPSET = 17
DEFAULT_MODEL = Path(__file__).with_name("bae_lstm_v1.onnx")
CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
CPU_ROWS = 512  # rows per onnxruntime run on the CPU (see LSTMRuntime._run)


class ModelFileError(BAEError):
    """A model file cannot be served (unreadable, wrong shape, wrong metadata)."""


def _expected_meta() -> dict[str, str]:
    return {"bae.format": FORMAT, "bae.window": str(F.WINDOW),
            "bae.horizon": str(F.HORIZON), "bae.features": ",".join(F.FEATURES),
            "bae.quantiles": ",".join(str(q) for q in F.QUANTILES),
            "bae.step_seconds": str(F.STEP_S)}


def _providers(device: str) -> list[str]:
    import onnxruntime as ort
    have = ort.get_available_providers()
    if device == "cpu":
        return [CPU]
    if CUDA in have:
        return [CUDA, CPU]
    if device == "cuda":
        log.warning("CUDA was requested but this onnxruntime has no CUDAExecutionProvider "
                    "(it has: %s); serving on the CPU. Install onnxruntime-gpu with a "
                    "matching CUDA to use the GPU.", ", ".join(have))
    return [CPU]


def _opset(path: Path) -> int | None:
    """The default-domain opset of the file, or None when the onnx package is absent."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
        raise ModelFileError(f"{path}: not an ONNX model ({e.__class__.__name__}: {e}); "
                             "give a file written by `bae train lstm`") from e
    return max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")),
               default=None)


def open_session(path, device: str = "auto", threads: int = 1, spin: bool = False):
    """Open and check ``path``; returns (session, metadata). Raises ModelFileError.
    ``spin``: let idle intra-op threads busy-wait (faster small batches, but they burn
    the cores the daemon's event loop needs; off by default)."""
    import onnxruntime as ort
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file; give the path of a .onnx file "
                             "written by `bae train lstm`")
    if device not in ("auto", "cpu", "cuda"):
        raise ModelFileError(f"device {device!r} is unknown; use auto, cpu or cuda")
    opset = _opset(path)
    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, int(threads))
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    providers = _providers(device)
    try:
        sess = ort.InferenceSession(str(path), so, providers=providers)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise ModelFileError(f"{path}: onnxruntime cannot load it ({e.__class__.__name__}: "
                             f"{str(e)[:300]}); give a file written by `bae train lstm`"
                             ) from e
    if CUDA in providers and CUDA not in sess.get_providers():
        log.warning("CUDAExecutionProvider failed to start (missing CUDA/cuDNN libraries?); "
                    "serving %s on the CPU", path.name)
    meta = dict(sess.get_modelmeta().custom_metadata_map)
    problems = []
    ins, outs = sess.get_inputs(), sess.get_outputs()
    if [i.name for i in ins] != [INPUT] or [o.name for o in outs] != [OUTPUT]:
        problems.append(f"inputs {[i.name for i in ins]} / outputs {[o.name for o in outs]}"
                        f" instead of [{INPUT!r}] / [{OUTPUT!r}]")
    else:
        want_in = [F.WINDOW, F.N_FEATURES]
        want_out = [len(F.QUANTILES), F.HORIZON]
        if list(ins[0].shape[1:]) != want_in or len(ins[0].shape) != 3:
            problems.append(f"input shape {ins[0].shape}, expected [batch, {F.WINDOW}, "
                            f"{F.N_FEATURES}]")
        if list(outs[0].shape[1:]) != want_out or len(outs[0].shape) != 3:
            problems.append(f"output shape {outs[0].shape}, expected [batch, "
                            f"{len(F.QUANTILES)}, {F.HORIZON}]")
        if ins[0].type != "tensor(float)" or outs[0].type != "tensor(float)":
            problems.append(f"types {ins[0].type} -> {outs[0].type}, expected float32")
    if opset is None:
        opset = int(meta.get("bae.opset", "0") or 0)
    if opset < MIN_OPSET:
        problems.append(f"opset {opset} < {MIN_OPSET}")
    for k, v in _expected_meta().items():
        if meta.get(k) != v:
            problems.append(f"metadata {k}={meta.get(k)!r}, this BAE needs {v!r}")
    if not problems:
        try:
            q = sess.run([OUTPUT], {INPUT: np.zeros((1, F.WINDOW, F.N_FEATURES), np.float32)})[0]
        except Exception as e:  # noqa: BLE001
            problems.append(f"a test run failed ({e.__class__.__name__}: {str(e)[:200]})")
        else:
            if q.shape != (1, len(F.QUANTILES), F.HORIZON) or not np.isfinite(q).all():
                problems.append(f"a test run gave shape {q.shape} / non-finite values")
    if problems:
        raise ModelFileError(f"{path}: not a usable BAE LSTM model: " + "; ".join(problems)
                             + "; retrain it with this BAE's `bae train lstm`")
    return sess, meta


class LSTMRuntime:
    """An onnxruntime session of a BAE LSTM file with preallocated I/O buffers."""

    def __init__(self, path=DEFAULT_MODEL, *, device: str = "auto", threads: int = 1,
                 max_batch: int = 4096, spin: bool = False):
        self.device, self.threads, self.max_batch = device, threads, int(max_batch)
        self.spin = spin
        self._lock = threading.Lock()
        self._x = np.zeros((self.max_batch, F.WINDOW, F.N_FEATURES), np.float32)
        self._q = np.zeros((self.max_batch, len(F.QUANTILES), F.HORIZON), np.float32)
        self._sess, self.meta = open_session(path, device, threads, spin)
        self.path = Path(path)

    @property
    def providers(self) -> list[str]:
        return self._sess.get_providers()

    def reload(self, path) -> None:
        """Serve ``path`` from now on, after checking it; on ModelFileError the current
        model keeps serving."""
        sess, meta = open_session(path, self.device, self.threads, self.spin)
        with self._lock:
            self._sess, self.meta, self.path = sess, meta, Path(path)
        log.info("serving LSTM model %s (%s)", path, meta.get("bae.training_command", ""))

    def _run(self, n: int) -> None:
        """Run the model on self._x[:n] into self._q[:n] (caller holds the lock). On the
        CPU in slices of CPU_ROWS rows bound in place: the LSTM's working set then stays
        in cache (512 rows ran ~1.3x faster per row than 4,096 on a 2-core x86)."""
        sess = self._sess
        io = sess.io_binding()
        if CUDA in sess.get_providers():
            io.bind_cpu_input(INPUT, self._x[:n])
            io.bind_output(OUTPUT, "cpu")
            sess.run_with_iobinding(io)
            self._q[:n] = io.copy_outputs_to_cpu()[0]
            return
        for a in range(0, n, CPU_ROWS):
            x, q = self._x[a:min(n, a + CPU_ROWS)], self._q[a:min(n, a + CPU_ROWS)]
            io.bind_input(INPUT, "cpu", 0, np.float32, list(x.shape), x.ctypes.data)
            io.bind_output(OUTPUT, "cpu", 0, np.float32, list(q.shape), q.ctypes.data)
            sess.run_with_iobinding(io)

    def predict(self, history, steps) -> dict[str, np.ndarray]:
        """Raw forecasts of n series: ``history`` float[n, L >= WINDOW] (last value last,
        NaN = not observed; see ``models.features``), ``steps`` int64[n] (or a scalar)
        the 5-minute step index of each last value. Returns {"p50", "p90", "p99"}: float32
        [n, HORIZON], steps 1..HORIZON ahead."""
        history = np.asarray(history)
        n = history.shape[0] if history.ndim == 2 else -1
        if n < 0 or history.shape[1] < F.WINDOW:
            raise ValueError(f"history must be float[n, >= {F.WINDOW}], got shape "
                             f"{history.shape}")
        steps = np.broadcast_to(np.asarray(steps, np.int64), (n,))
        out = np.empty((n, len(F.QUANTILES), F.HORIZON), np.float32)
        with self._lock:
            for a in range(0, n, self.max_batch):
                b = min(n, a + self.max_batch)
                _, mu, sc = F.build_features(history[a:b], steps[a:b], out=self._x)
                self._run(b - a)
                out[a:b] = F.denormalise(self._q[:b - a], mu, sc)
        return {f"p{round(q * 100)}": np.ascontiguousarray(out[:, i])
                for i, q in enumerate(F.QUANTILES)}


class InferenceWorker(threading.Thread):
    """A daemon thread that every ``interval_s`` calls ``source()`` -> (keys, history,
    steps) or None, runs ``runtime.predict`` in chunks of ``chunk`` rows, and publishes
    ``latest``: a new dict {"keys", "p50", "p90", "p99", "at": unix s, "seq"} replacing the
    old one in one reference assignment (readers never lock; they get the old or the new
    dict, never a mix). Errors are logged and counted in ``errors``; the worker goes on."""

    def __init__(self, runtime: LSTMRuntime, source: Callable[[], tuple | None],
                 interval_s: float = 60.0, chunk: int = 1024):
        super().__init__(name="bae-lstm-inference", daemon=True)
        self.runtime, self.source = runtime, source
        self.interval_s, self.chunk = float(interval_s), int(chunk)
        self.latest: dict | None = None
        self.errors = 0
        self._stop_event = threading.Event()
        self._kick = threading.Event()

    def run_once(self) -> dict | None:
        """One round in the calling thread; returns the published dict (or None)."""
        got = self.source()
        if got is None:
            return None
        keys, history, steps = got
        history = np.asarray(history)
        steps = np.broadcast_to(np.asarray(steps, np.int64), (len(history),))
        parts = [self.runtime.predict(history[a:a + self.chunk], steps[a:a + self.chunk])
                 for a in range(0, len(history), self.chunk)]
        res = {k: np.concatenate([p[k] for p in parts]) if parts else
               np.zeros((0, F.HORIZON), np.float32) for k in ("p50", "p90", "p99")}
        res.update(keys=keys, at=time.time(),
                   seq=(self.latest["seq"] + 1) if self.latest else 1)
        self.latest = res
        return res

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - keep serving the last forecasts
                self.errors += 1
                log.exception("LSTM inference round failed; keeping the last forecasts")
            self._kick.wait(self.interval_s)
            self._kick.clear()

    def trigger(self) -> None:
        """Start the next round now instead of at the end of the interval."""
        self._kick.set()

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop_event.set()
        self._kick.set()
        if self.is_alive():
            self.join(timeout)
