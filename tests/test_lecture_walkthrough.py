"""python -m fastgrad.lecture: the printed walkthrough carries the lecture's numbers, in backprop order."""
import contextlib
import io
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from fastgrad import lecture


@pytest.fixture(scope="module")
def printed(tmp_path_factory):
    """{example number: its printed text} and the output folder, from one in-process run."""
    out = tmp_path_factory.mktemp("graphs")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert lecture.main(["--out", str(out), "--format", "dot"]) == 0
    text = stdout.getvalue()
    parts = re.split(r"^Example (\d+):", text, flags=re.M)
    return {int(n): body for n, body in zip(parts[1::2], parts[2::2])}, out


def gradients(body):
    """{leaf name: value} from the 'gradients of f:' block."""
    block = body.split("gradients of f:\n", 1)[1]
    return {m[1]: json.loads(m[2]) for m in re.finditer(r"^  d(\w+) = (.+)$", block, flags=re.M)}


def visits(body):
    """[(node, op, value, upstream)] in printed order."""
    return [
        (m[1], m[2], json.loads(m[3]), json.loads(m[4]))
        for m in re.finditer(r"^  (\S+) = (\w+): value (.+), upstream (.+)$", body, flags=re.M)
    ]


def edges(body):
    """[(node, input, local, upstream, downstream)] in printed order."""
    found, node = [], None
    for line in body.splitlines():
        m = re.match(r"^  (\S+) = \w+: value", line)
        if m:
            node = m[1]
        m = re.match(r"^    to (.+?): local (.+) \* upstream (.+) = downstream (.+)$", line)
        if m:
            found.append((node, m[1], *(json.loads(m[i]) for i in (2, 3, 4))))
    return found


def test_add_mul(printed):
    body = printed[0][1]
    assert gradients(body) == {"x": -4, "y": -4, "z": 3}
    assert visits(body) == [("f", "mul", -12, 1), ("q", "add", 3, -4)]
    assert edges(body) == [("f", "q", -4, 1, -4), ("f", "z", 3, 1, 3), ("q", "x", 1, -4, -4),
                           ("q", "y", 1, -4, -4)]


def test_sigmoid_neuron_gate_by_gate(printed):
    body = printed[0][2]
    grads = gradients(body)
    assert {k: round(v, 2) for k, v in grads.items()} == {
        "w0": -0.20, "w1": -0.39, "w2": 0.20, "x0": 0.39, "x1": -0.59}
    # backprop visits the gates from the output back: 1/x, +1, exp, *-1, +w2, +, then the two products
    assert [op for _, op, _, _ in visits(body)] == ["div", "add", "exp", "neg", "add", "add", "mul", "mul"]
    # the slide's chain of gradients: 1.00 -> -0.53 -> -0.53 -> -0.20 -> 0.20 -> 0.20 ...
    assert [round(up, 2) for _, _, _, up in visits(body)] == [1.0, -0.53, -0.53, -0.2, 0.2, 0.2, 0.2, 0.2]
    assert [round(v, 2) for _, _, v, _ in visits(body)] == [0.73, 1.37, 0.37, -1.0, 1.0, 4.0, 6.0, -2.0]
    # every printed downstream is local * upstream
    for *_, local, upstream, downstream in edges(body):
        assert downstream == pytest.approx(local * upstream, abs=2e-4)
    assert "to const 1: constant, no gradient" in body


def test_matrix_norm(printed):
    body = printed[0][3]
    grads = gradients(body)
    np.testing.assert_allclose(grads["W"], [[0.088, 0.176], [0.104, 0.208]], atol=1e-4)
    np.testing.assert_allclose(grads["x"], [-0.112, 0.636], atol=1e-4)
    q = [v for v in visits(body) if v[0] == "q"][0]
    assert q[1:] == ("matmul", pytest.approx([0.22, 0.26]), pytest.approx([0.44, 0.52]))  # 2q
    to_x = [e for e in edges(body) if e[:2] == ("q", "x")][0]
    np.testing.assert_allclose(to_x[2], [[0.1, 0.5], [-0.3, 0.8]])  # dq/dx = W


def test_graphs_are_drawn(printed):
    out = printed[1]
    assert sorted(p.name for p in out.iterdir()) == [
        "graph_add_mul.dot", "graph_matrix_norm.dot", "graph_sigmoid_neuron.dot"]
    assert "grad -4" in (out / "graph_add_mul.dot").read_text()


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot is not on PATH")
def test_module_runs_and_draws_svg(tmp_path):
    done = subprocess.run([sys.executable, "-m", "fastgrad.lecture", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "dw0 = -0.1966" in done.stdout
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".svg"] * 3


def test_module_without_dot_writes_dot_files(tmp_path):
    done = subprocess.run([sys.executable, "-m", "fastgrad.lecture", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env={"PATH": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert len(done.stderr.splitlines()) == 3 and "apt-get install graphviz" in done.stderr
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".dot"] * 3


@pytest.mark.parametrize("argv", [["--bogus"], ["--format", "jpg"], ["--out"]])
def test_usage_mistakes_print_one_line_and_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        lecture.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("python -m fastgrad.lecture: error:")


def test_out_is_a_file(tmp_path, capsys):
    path = tmp_path / "a-file"
    path.write_text("")
    with pytest.raises(SystemExit) as e:
        lecture.main(["--out", str(path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "not a folder" in err
