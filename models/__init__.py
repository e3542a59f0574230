"""Learned forecasters: ONNX model files, the onnxruntime serving wrapper, and the
training/export code. Nothing ships here yet; the online models in bae_core/ serve alone."""
