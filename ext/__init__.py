"""Cython extensions of BAE, built by setup.py (``python setup.py build_ext --inplace``)."""
