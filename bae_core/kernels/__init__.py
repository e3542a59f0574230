"""Numba kernels: plain functions over arrays, no Python objects, no exceptions.

Flags for every kernel are read once here from the environment.
"""

import os

JIT = dict(cache=os.environ.get("BAE_NUMBA_CACHE", "1") != "0", nogil=True)
