"""BAE's pure logic: wire format, kernels, models and policy. Nothing here does IO."""

__version__ = "0.1.0"
