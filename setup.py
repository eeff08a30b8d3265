"""Build the C/Cython extensions.

Sources, include dirs, compiler flags, OpenMP and Cython directives live here and only here.
OpenMP is used when the compiler accepts -fopenmp (checked by compiling and linking a test
program); otherwise the kernels build serial, keeping only the vectorizing `omp simd` loops when
the compiler accepts -fopenmp-simd. Set FASTGRAD_BOUNDSCHECK=1 to rebuild with Cython bounds and
wraparound checks on (debugging), FASTGRAD_NO_OPENMP=1 to build serial kernels.
"""
import os
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

try:  # the copy of distutils that setuptools ships (and builds with), else the standard library's
    from setuptools._distutils.ccompiler import new_compiler
    from setuptools._distutils.sysconfig import customize_compiler
except ImportError:
    from distutils.ccompiler import new_compiler
    from distutils.sysconfig import customize_compiler

# the fused affine passes (affine.c) share the thread setting and the activations of _kernels
CSRC = [f"csrc/{name}.c" for name in ("threads", "adapt", "validate", "elementwise", "affine", "routing",
                                       "losses")]

# -fno-trapping-math lets GCC turn `c ? a * b : a` into a vector select (we never read FP flags).
CFLAGS = ["-O3", "-fno-trapping-math"]
OPENMP = {"compile": ["-fopenmp"], "link": ["-fopenmp"], "macros": []}
SIMD_ONLY = {"compile": ["-fopenmp-simd"], "link": [], "macros": [("FG_OPENMP_SIMD", "1")]}
SERIAL = {"compile": [], "link": [], "macros": []}
OMP_TEST = "#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n"
SIMD_TEST = "int main(void) {\n#pragma omp simd\nfor (int i = 0; i < 4; i++) {}\nreturn 0; }\n"


def compiles(source: str, flags: dict) -> bool:
    """Whether the C compiler setuptools will use compiles and links `source` with `flags`.

    Any failure means no: a CompileError or LinkError (whichever distutils copy raised it: old
    setuptools and the standard library each have their own classes), a compiler that cannot be
    run, or anything else the compiler machinery raises. The test files go to a temporary
    folder that is removed either way.
    """
    with tempfile.TemporaryDirectory(prefix="fastgrad-cc-") as tmp:
        try:
            cc = new_compiler()
            customize_compiler(cc)
            src = os.path.join(tmp, "test.c")
            with open(src, "w") as f:
                f.write(source)
            objs = cc.compile([src], output_dir=tmp, extra_postargs=flags["compile"] + ["-Werror"])
            cc.link_executable(objs, os.path.join(tmp, "test"), extra_postargs=flags["link"])
        except Exception as e:  # noqa: BLE001 (any failure of the probe means "no")
            print(f"fastgrad: {' '.join(flags['compile']) or 'plain C'} not usable ({type(e).__name__})")
            return False
    return True


if os.environ.get("FASTGRAD_NO_OPENMP", "0") != "1" and compiles(OMP_TEST, OPENMP):
    parallel, mode = OPENMP, "with OpenMP"
elif compiles(SIMD_TEST, SIMD_ONLY):
    parallel, mode = SIMD_ONLY, "serial (no OpenMP threads; omp simd loops)"
else:
    parallel, mode = SERIAL, "serial (no OpenMP)"
print(f"fastgrad: building the C kernels {mode}")

boundscheck = os.environ.get("FASTGRAD_BOUNDSCHECK", "0") == "1"
directives = {
    "language_level": 3,
    "boundscheck": boundscheck,
    "wraparound": boundscheck,
    "initializedcheck": boundscheck,
    "cdivision": True,
}

# what the extensions share
common = dict(
    include_dirs=["csrc", np.get_include()],
    depends=[os.path.join("csrc", f) for f in os.listdir("csrc") if f.endswith(".h")],
)
NPY_API = ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")


def kernel_extension(name: str, sources: list, flags: tuple = ()) -> Extension:
    """An extension built like the kernels: CFLAGS (then `flags`) and the OpenMP mode chosen above."""
    return Extension(name, sources=sources, define_macros=[NPY_API, *parallel["macros"]],
                     extra_compile_args=CFLAGS + list(flags) + parallel["compile"],
                     extra_link_args=parallel["link"], **common)


extensions = [
    kernel_extension("fastgrad._kernels", ["fastgrad/_kernels.pyx", *CSRC]),
    # BLAS products (scipy.linalg.cython_blas) on fastgrad's own threads (csrc/adapt.c); the fused
    # passes around them are cimported from _kernels
    kernel_extension("fastgrad._linalg", ["fastgrad/_linalg.pyx", "csrc/adapt.c"]),
    # the program of a captured step (fastgrad.capture): instructions over the C entry points of
    # _linalg and _kernels, run without Python per op
    # (no fused multiply-add: each operation rounds as NumPy's does, so a replay is bit-identical)
    kernel_extension("fastgrad._plan", ["fastgrad/_plan.pyx"], flags=["-ffp-contract=off"]),
    # batch norm, layer norm and dropout (serial kernels; omp simd loops when available)
    kernel_extension("fastgrad._norm", ["fastgrad/_norm.pyx", "csrc/norm.c"]),
    # the optimizer updates, one serial pass per parameter buffer, bit-identical to NumPy's
    # op-by-op rounding: no FMA contraction (GCC contracts by default in the FMA clones);
    # -fno-math-errno lets sqrt vectorize (nothing reads errno)
    kernel_extension("fastgrad._optim", ["fastgrad/_optim.pyx", "csrc/optim.c"],
                     flags=("-ffp-contract=off", "-fno-math-errno")),
    # the tape: Node, apply and the backward walk (no C sources; NumPy's C API for scalars). Not
    # -fno-trapping-math: its small arithmetic reads the floating-point flags (to warn as NumPy)
    Extension("fastgrad._tape", sources=["fastgrad/_tape.pyx"], define_macros=[NPY_API],
              extra_compile_args=["-O3"], **common),
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives))
