"""docs/PORTING.md runs as written: every ```python block (fastgrad) always, every ```python torch
block when torch is importable."""
import re
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "PORTING.md"
BLOCKS = re.findall(r"```python( torch)?\n(.*?)```", GUIDE.read_text(), flags=re.S)


def test_the_guide_has_both_kinds_of_blocks():
    kinds = [bool(t) for t, _ in BLOCKS]
    assert kinds.count(True) >= 2 and kinds.count(False) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_guide_block_runs(index, capsys):
    needs_torch, code = BLOCKS[index]
    if needs_torch:
        torch = pytest.importorskip("torch")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
    try:
        exec(compile(code, f"PORTING.md block {index}", "exec"), {"__name__": "__porting__"})
    finally:
        if needs_torch:
            torch.set_num_threads(threads)
