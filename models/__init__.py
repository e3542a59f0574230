"""Learned forecasters: the shipped LSTM (``bae_lstm_v1.onnx``, card ``bae_lstm_v1.md``),
its onnxruntime serving wrapper (``runtime``), shared window features (``features``),
training and ONNX export (``data``, ``lstm``, ``export``; need ``bae[train]``), Prophet
refits (``prophet_refit``; needs ``bae[prophet]``) and ``bae eval forecast`` adapters
(``forecasters``)."""
