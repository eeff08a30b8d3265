"""Build the C/Cython extension.

Sources, include dirs, compiler flags, OpenMP and Cython directives live here and only here.
OpenMP is used when the compiler accepts -fopenmp (checked by compiling and linking a test
program); otherwise the kernels build serial. Set FASTGRAD_BOUNDSCHECK=1 to rebuild with Cython
bounds and wraparound checks on (debugging), FASTGRAD_NO_OPENMP=1 to build serial kernels.
"""
import os
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools._distutils.ccompiler import new_compiler
from setuptools._distutils.errors import CompileError, LinkError
from setuptools._distutils.sysconfig import customize_compiler

CSRC = ["csrc/threads.c", "csrc/elementwise.c", "csrc/routing.c", "csrc/losses.c"]

# -fno-trapping-math lets GCC turn `c ? a * b : a` into a vector select (we never read FP flags).
CFLAGS = ["-O3", "-fno-trapping-math"]
OPENMP_FLAGS = ["-fopenmp"]


def accepts_openmp() -> bool:
    """Whether the C compiler setuptools will use compiles and links an OpenMP program."""
    if os.environ.get("FASTGRAD_NO_OPENMP", "0") == "1":
        return False
    cc = new_compiler()
    customize_compiler(cc)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp_test.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n")
        try:
            objs = cc.compile([src], output_dir=tmp, extra_postargs=OPENMP_FLAGS)
            cc.link_executable(objs, os.path.join(tmp, "omp_test"), extra_postargs=OPENMP_FLAGS)
        except (CompileError, LinkError):
            return False
    return True


openmp = accepts_openmp()
print(f"fastgrad: building the C kernels {'with OpenMP' if openmp else 'serial (no OpenMP)'}")

boundscheck = os.environ.get("FASTGRAD_BOUNDSCHECK", "0") == "1"
directives = {
    "language_level": 3,
    "boundscheck": boundscheck,
    "wraparound": boundscheck,
    "initializedcheck": boundscheck,
    "cdivision": True,
}

extensions = [
    Extension(
        "fastgrad._kernels",
        sources=["fastgrad/_kernels.pyx", *CSRC],
        include_dirs=["csrc", np.get_include()],
        depends=[os.path.join("csrc", f) for f in os.listdir("csrc") if f.endswith(".h")],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=CFLAGS + (OPENMP_FLAGS if openmp else []),
        extra_link_args=OPENMP_FLAGS if openmp else [],
    )
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives))
