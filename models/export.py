"""ONNX export of a trained ``QuantileLSTM``, with metadata and an onnxruntime parity check.

The file has one input ``x`` float32[batch, WINDOW, N_FEATURES] and one output ``q``
float32[batch, 3, HORIZON] (normalised p50/p90/p99), a dynamic batch axis, opset
``OPSET``, and ``metadata_props`` (keys in ``META_KEYS``) that ``models.runtime`` checks
before it serves a file.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from bae_core.errors import BAEError
from models import features as F

OPSET = 17
INPUT, OUTPUT = "x", "q"
FORMAT = "bae-lstm-quantile/1"
PARITY_ATOL = 1e-4


class ParityError(BAEError):
    """onnxruntime and PyTorch disagree on the exported model."""


@contextlib.contextmanager
def quiet_export():
    """Silence the known warnings of the legacy (TorchScript) exporter: its deprecation,
    an internal one, the LSTM batch-size note (the exported LSTM has no h0/c0 inputs, so
    any batch works; tests run batches 1 to 4,096), and the tracer's note on nn.LSTM's
    hidden-state size check (``hx.size() != expected``, a shape check, not data flow)."""
    import torch
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Converting a tensor to a Python boolean",
                                torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX",
                                DeprecationWarning)
        warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning)
        warnings.filterwarnings("ignore", "Exporting a model to ONNX with a batch_size other "
                                "than 1", UserWarning)
        yield


def model_metadata(command: str = "", extra: dict | None = None) -> dict[str, str]:
    """The metadata every BAE LSTM file carries (all values are strings)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        bae_version = version("bae")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        bae_version = "unknown"
    meta = {"bae.format": FORMAT, "bae.version": bae_version, "bae.opset": str(OPSET),
            "bae.window": str(F.WINDOW), "bae.horizon": str(F.HORIZON),
            "bae.step_seconds": str(F.STEP_S), "bae.history": str(F.HISTORY),
            "bae.features": ",".join(F.FEATURES),
            "bae.quantiles": ",".join(str(q) for q in F.QUANTILES),
            "bae.normalisation": F.NORMALISATION, "bae.training_command": command}
    meta.update({f"bae.{k}": str(v) for k, v in (extra or {}).items()})
    return meta


def export_onnx(model, out, command: str = "", extra: dict | None = None,
                check_batch: int = 64, seed: int = 0) -> float:
    """Write ``model`` to ``out`` (ONNX, dynamic batch, metadata), then run a random batch
    through onnxruntime and PyTorch; raises ParityError when they differ by more than
    PARITY_ATOL. Returns the max abs difference."""
    import onnx
    import torch
    model.eval()
    dummy = torch.zeros(2, F.WINDOW, F.N_FEATURES)
    buf = io.BytesIO()
    with quiet_export():
        torch.onnx.export(model, (dummy,), buf, input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                          opset_version=OPSET, dynamo=False)
    proto = onnx.load_from_string(buf.getvalue())
    proto.producer_name = "bae"
    del proto.metadata_props[:]
    for k, v in model_metadata(command, extra).items():
        proto.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(proto)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".onnx.tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(proto.SerializeToString())
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; a model file is for every reader
    try:
        diff = parity(model, tmp, check_batch, seed)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return diff


def parity(model, path, batch: int = 64, seed: int = 0) -> float:
    """Max abs difference of onnxruntime (CPU) and PyTorch outputs on a random batch of
    clipped normal features; ParityError above PARITY_ATOL."""
    import onnxruntime as ort
    import torch
    x = np.random.default_rng(seed).standard_normal((batch, F.WINDOW, F.N_FEATURES))
    x = np.clip(x, -F.CLIP, F.CLIP).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run([OUTPUT], {INPUT: x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    if got.shape != want.shape:
        raise ParityError(f"onnxruntime output shape {got.shape} != PyTorch {want.shape}; "
                          "the export is broken, nothing was written")
    diff = float(np.max(np.abs(got - want)))
    if not diff < PARITY_ATOL:
        raise ParityError(f"onnxruntime and PyTorch differ by {diff:.3g} (> {PARITY_ATOL}) "
                          f"on a random batch; nothing was written; check the torch/onnx "
                          "versions (pip install 'bae[train]')")
    return diff
