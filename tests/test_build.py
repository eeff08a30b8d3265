"""setup.py's OpenMP fall-back: without -fopenmp the build goes on serially, and the serial build works.

setup.py probes the compiler (compile and link a test program) for -fopenmp, then -fopenmp-simd,
and builds with the first that works. A probe that fails in any way (a CompileError or LinkError
of whichever distutils copy, a compiler that cannot be run) must mean "no", never an aborted build.
The compilers here are wrapper scripts around the real one that fail on the flags they "lack".
(With setuptools 65.5, what a fresh Python 3.11 venv such as CI's has, the compiler raises
`distutils.errors.LinkError`, not the `setuptools._distutils.errors.LinkError` that setup.py used to
catch, and the old setup.py aborted in test_probe_falls_back_without_fopenmp[link]; newer setuptools
raises its own class, so test_probe_survives_a_foreign_link_error_class injects a foreign one.)

The probes alone are checked with `setup.py --name` (no build, 1-4 s each). The last test builds
the extensions serially into a copy of the sources in a temporary folder and runs a kernel check on
that build in a subprocess (40-110 s on a shared 2-core machine); the second, FASTGRAD_DEBUG=1 pass
and FASTGRAD_PURE_TAPE=1 passes of the README's test command skip it: they do not change the build.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SIMD_MODE = "building the C kernels serial (no OpenMP threads; omp simd loops)"
SERIAL_MODE = "building the C kernels serial (no OpenMP)"
OPENMP_MODE = "building the C kernels with OpenMP"


def real_cc() -> str:
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    path = shutil.which(cc)
    if path is None:
        pytest.fail(f"no C compiler {cc!r} on PATH: the package cannot be built at all")
    return path


def wrapper(folder: Path, name: str, rejects: tuple, when: str = "always") -> str:
    """A compiler script that exits 1 when it sees one of `rejects` (exact arguments) — at every
    call, or only when linking (no -c), as a toolchain without libgomp would — else runs the real one."""
    script = folder / name
    checks = " || ".join(f'[ "$a" = "{flag}" ]' for flag in rejects)
    lines = ["#!/bin/sh", f'REAL="{real_cc()}"']
    if when == "link":  # compiling (-c) always works
        lines.append('case " $* " in *" -c "*) exec "$REAL" "$@";; esac')
    lines += ['for a in "$@"; do',
              f'    if {checks}; then echo "{name}: unsupported option $a" >&2; exit 1; fi',
              "done",
              'exec "$REAL" "$@"']
    script.write_text("\n".join(lines) + "\n")
    script.chmod(0o755)
    return str(script)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    """A copy of what setup.py builds from (with any Cython output already generated, so that
    cythonize has nothing to redo), in a temporary folder."""
    dst = tmp_path_factory.mktemp("build") / "src"
    dst.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dst / name)
    shutil.copytree(ROOT / "csrc", dst / "csrc")
    shutil.copytree(ROOT / "fastgrad", dst / "fastgrad",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__", "*.pyd"))
    return dst


def run_setup(src: Path, args: list, tmp: Path, **env) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("CC", "FASTGRAD_NO_OPENMP", "PYTHONPATH")}
    full_env.update(env, TMPDIR=str(tmp))
    return subprocess.run([sys.executable, "setup.py", *args], cwd=src, env=full_env,
                          capture_output=True, text=True, timeout=600)


def probe(src: Path, tmp: Path, **env) -> str:
    """The build mode setup.py picks under `env` (its probes run, nothing is built).

    `--name` builds nothing, so Cython is not needed: a stand-in `cythonize` (which returns the
    extensions as they are) lets the probes run where Cython is not installed, and faster.
    """
    pytest.importorskip("setuptools", reason="setup.py needs setuptools (Python >= 3.12 venvs lack it)")
    stub = tmp / "stub" / "Cython"
    stub.mkdir(parents=True, exist_ok=True)
    (stub / "__init__.py").write_text("")
    (stub / "Build.py").write_text("def cythonize(extensions, **kwargs):\n    return extensions\n")
    path = os.pathsep.join(filter(None, [env.pop("EXTRA_PATH", None), str(stub.parent)]))
    r = run_setup(src, ["--name"], tmp, PYTHONPATH=path, **env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith("fastgrad"), r.stdout
    return r.stdout


def test_probe_picks_openmp_when_the_compiler_has_it(sources, tmp_path):
    assert OPENMP_MODE in probe(sources, tmp_path)


def test_probe_falls_back_with_fastgrad_no_openmp(sources, tmp_path):
    assert SIMD_MODE in probe(sources, tmp_path, FASTGRAD_NO_OPENMP="1")


@pytest.mark.parametrize("when", ["always", "link"])
def test_probe_falls_back_without_fopenmp(sources, tmp_path, when):
    # the compile failing (CompileError) and, with a compiler that compiles -fopenmp but cannot
    # link it (no libgomp), the link failing (LinkError)
    cc = wrapper(tmp_path, "cc-no-openmp", ("-fopenmp",), when)
    out = probe(sources, tmp_path, CC=cc)
    assert SIMD_MODE in out and "-fopenmp not usable" in out


FOREIGN_LINK_ERROR = """\
# Makes linking with -fopenmp raise a LinkError class that setup.py never imported, as old
# setuptools did (its compiler raised the LinkError of another copy of distutils).
from setuptools._distutils.ccompiler import new_compiler


class LinkError(Exception):
    pass


Compiler = type(new_compiler())  # the class setup.py's new_compiler() will make
_link = Compiler.link


def link(self, *args, **kwargs):
    if any(isinstance(a, list) and "-fopenmp" in a for a in (*args, *kwargs.values())):
        raise LinkError("cannot find -lgomp")
    return _link(self, *args, **kwargs)


Compiler.link = link
"""


def test_probe_survives_a_foreign_link_error_class(sources, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(FOREIGN_LINK_ERROR)
    out = probe(sources, tmp_path, EXTRA_PATH=str(site))
    assert SIMD_MODE in out and "-fopenmp not usable (LinkError)" in out


def test_probe_falls_back_to_plain_serial(sources, tmp_path):
    cc = wrapper(tmp_path, "cc-no-omp-at-all", ("-fopenmp", "-fopenmp-simd"))
    assert SERIAL_MODE in probe(sources, tmp_path, CC=cc)


def test_probe_survives_a_compiler_that_cannot_run(sources, tmp_path):
    # spawning fails (DistutilsExecError, not a CompileError in every distutils copy): still "no"
    out = probe(sources, tmp_path, CC=str(tmp_path / "no-such-cc"))
    assert SERIAL_MODE in out


KERNEL_CHECK = r"""
import sys
import numpy as np
import fastgrad as fg
from fastgrad import _kernels as K
assert fg.__file__.startswith(sys.argv[1]), fg.__file__  # the serial build, not the tested one
assert not K.openmp_enabled()
fg.set_num_threads(2)  # accepted, and harmless: the kernels are serial
rng = np.random.default_rng(0)
for dtype in ("float32", "float64"):
    x0 = rng.standard_normal((70000,)).astype(dtype)  # above the OpenMP thresholds
    x0[:3] = [np.nan, 0.0, -np.inf]
    relu = K.relu_forward(x0)
    assert np.isnan(relu[0]) and relu[1] == 0 and relu[2] == 0
    np.testing.assert_array_equal(relu[3:], np.maximum(x0[3:], 0))
    np.testing.assert_allclose(K.tanh_forward(x0[3:]), np.tanh(x0[3:].astype(float)), rtol=1e-6, atol=1e-7)
    x = fg.tensor(rng.standard_normal((9, 5)), dtype=dtype, requires_grad=True)
    W = fg.tensor(rng.standard_normal((5, 3)), dtype=dtype, requires_grad=True)
    b = fg.tensor(rng.standard_normal(3), dtype=dtype, requires_grad=True)
    y = fg.affine(x, W, b, activation="sigmoid")
    y.sum().backward()
    z = x.data.astype(float) @ W.data + b.data
    s = 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(y.data, s, rtol=1e-5)
    np.testing.assert_allclose(b.grad, (s * (1 - s)).sum(axis=0), rtol=1e-5)
print("serial build ok")
"""


@pytest.mark.skipif("1" in (os.environ.get("FASTGRAD_DEBUG"), os.environ.get("FASTGRAD_PURE_TAPE")),
                    reason="the build is the same in the FASTGRAD_DEBUG=1 and FASTGRAD_PURE_TAPE=1 passes: "
                           "the first pass ran it")
def test_serial_build_without_fopenmp_imports_and_computes(sources, tmp_path):
    for module in ("setuptools", "Cython"):
        try:
            __import__(module)
        except ImportError:
            pytest.fail(f"the serial build needs {module} in this environment "
                        "(pip install 'setuptools>=64' 'Cython>=3')")
    cc = wrapper(tmp_path, "cc-no-openmp", ("-fopenmp",))
    r = run_setup(sources, ["build_ext", "--inplace", "-j2"], tmp_path, CC=cc)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    assert SIMD_MODE in log  # and the build never passed -fopenmp: the compiler would have failed
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    check = subprocess.run([sys.executable, "-c", KERNEL_CHECK, str(sources)], cwd=sources, env=env,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "serial build ok" in check.stdout
