"""Build the C/Cython extension.

Sources, include dirs, compiler flags and Cython directives live here and only here.
Set FASTGRAD_BOUNDSCHECK=1 to rebuild with Cython bounds and wraparound checks on (debugging).
"""
import os

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

CSRC = ["csrc/elementwise.c"]

boundscheck = os.environ.get("FASTGRAD_BOUNDSCHECK", "0") == "1"
directives = {
    "language_level": 3,
    "boundscheck": boundscheck,
    "wraparound": boundscheck,
    "initializedcheck": boundscheck,
    "cdivision": True,
}

common = dict(
    include_dirs=["csrc", np.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    extra_compile_args=["-O3"],
)

extensions = [
    Extension("fastgrad._kernels", sources=["fastgrad/_kernels.pyx", *CSRC], **common),
    # BLAS (scipy.linalg.cython_blas) products and the fused affine passes
    Extension("fastgrad._linalg", sources=["fastgrad/_linalg.pyx", "csrc/affine.c"], **common),
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives))
