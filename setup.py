"""Builds the Cython extensions in ext/. BAE_DEBUG=1 turns on bounds checks, line tracing
and annotation; the default build is optimised."""

import os
from glob import glob

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("BAE_DEBUG") == "1"

extensions = [
    Extension(
        f"ext.{os.path.splitext(os.path.basename(p))[0]}",
        [p],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
        + ([("CYTHON_TRACE_NOGIL", "1")] if DEBUG else []),
        extra_compile_args=["-O0", "-g"] if DEBUG else ["-O3"],
    )
    for p in sorted(glob("ext/*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        annotate=DEBUG,
        compiler_directives={
            "boundscheck": DEBUG,
            "wraparound": False,
            "initializedcheck": DEBUG,
            "cdivision": not DEBUG,
            "linetrace": DEBUG,
        },
    )
)
