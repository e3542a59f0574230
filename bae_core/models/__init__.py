"""Online models: thin wrappers over the numba kernels in ``bae_core.kernels``, one module
per model family, all keeping the contract of ``base.Model``."""
