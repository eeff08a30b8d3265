"""pytest-benchmark suite: every kernel's forward+backward, fastgrad against fastgrad.reference.

    python -m pytest bench/                                # all kernels at all sizes
    python -m pytest bench/ -k "relu and 1M"               # a subset
    python -m pytest bench/ --benchmark-group-by=group     # fastgrad next to reference per case

Not collected by the default `python -m pytest` (testpaths is tests/). Sizes: 64x100, the MNIST MLP
layer (128x784 -> 256), the CIFAR-10 MLP layer (256x3072 -> 512) and 1M elements; see cases.py.
Each case first checks that fastgrad and the reference agree, then each contender is timed.
"""
import pytest

import cases

KERNELS = cases.kernel_cases()


@pytest.fixture(scope="module", params=KERNELS, ids=[name for name, _ in KERNELS])
def case(request):
    """The case built once per module, its contenders' results checked to agree."""
    _, factory = request.param
    built = factory()
    built.check()
    return built


@pytest.mark.parametrize("contender", ["fastgrad", "reference"])
def test_forward_backward(benchmark, case, contender):
    benchmark.group = case.name
    benchmark(case.contenders[contender])
