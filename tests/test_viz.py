"""fastgrad.viz: the DOT text of a graph (nodes, edges, values, gradients, escaping) and draw()."""
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import viz

# ------------------------------------------------------------------------------------------------
# A small reader for the DOT that viz writes: it tokenizes (quoted strings, nested <...> HTML labels),
# checks the structure (one digraph, balanced braces, attribute lists, every edge endpoint declared
# before use) and parses each HTML label as XML. Any deviation fails the test.

_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|-?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)")


def tokenize(text):
    i, n, out = 0, len(text), []
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c == '"':
            j, buf = i + 1, []
            while text[j] != '"':  # IndexError: unterminated string
                if text[j] == "\\":
                    buf.append({"n": "\n"}.get(text[j + 1], text[j + 1]))
                    j += 2
                else:
                    buf.append(text[j])
                    j += 1
            out.append(("str", "".join(buf)))
            i = j + 1
        elif c == "<":
            depth, j = 0, i
            while True:  # IndexError: unbalanced <...>
                depth += {"<": 1, ">": -1}.get(text[j], 0)
                j += 1
                if depth == 0:
                    break
            out.append(("html", text[i + 1 : j - 1]))
            i = j
        elif text.startswith("->", i):
            out.append(("->", "->"))
            i += 2
        elif c in "{}[];=,":
            out.append((c, c))
            i += 1
        else:
            m = _ID.match(text, i)
            assert m, f"unexpected character {c!r} at {i}: {text[i:i + 40]!r}"
            out.append(("id", m.group()))
            i = m.end()
    return out


def parse_dot(text):
    """(nodes {id: attrs}, edges [(a, b)], graph attrs) of viz's DOT, checking its structure."""
    toks = tokenize(text)
    depth = 0
    for kind, _ in toks:
        depth += {"{": 1, "}": -1}.get(kind, 0)
        assert depth >= 0, "unbalanced braces"
    assert depth == 0, "unbalanced braces"
    assert toks[0] == ("id", "digraph") and toks[1][0] == "id" and toks[2][0] == "{"
    assert toks[-1][0] == "}"
    body = toks[3:-1]
    nodes, edges, graph = {}, [], {}

    def attrs(k):
        assert body[k][0] == "["
        k, found = k + 1, {}
        while body[k][0] != "]":
            assert body[k][0] == "id" and body[k + 1][0] == "=", body[k : k + 3]
            assert body[k + 2][0] in ("id", "str", "html"), body[k + 2]
            found[body[k][1]] = body[k + 2]
            k += 3
            if body[k][0] == ",":
                k += 1
        return found, k + 1

    k = 0
    while k < len(body):
        head = body[k]
        assert head[0] == "id", f"statement starts with {head}"
        if body[k + 1][0] == "=":  # graph attribute
            graph[head[1]] = body[k + 2]
            k += 3
        elif head[1] in ("graph", "node", "edge"):
            found, k = attrs(k + 1)
            if head[1] == "graph":
                graph.update(found)
        elif body[k + 1][0] == "->":
            a, b = head[1], body[k + 2]
            assert b[0] == "id"
            assert a in nodes and b[1] in nodes, f"edge {a} -> {b[1]} uses an undeclared node"
            edges.append((a, b[1]))
            k += 3
        else:
            assert head[1] not in nodes, f"node {head[1]} declared twice"
            nodes[head[1]], k = attrs(k + 1)
        assert body[k][0] == ";", f"missing ';' after statement near {body[k - 2:k + 1]}"
        k += 1
    return nodes, edges, graph


def label_rows(node_attrs):
    """The text rows of an HTML label (parsed as XML: malformed labels fail here)."""
    kind, content = node_attrs["label"]
    assert kind == "html"
    root = ET.fromstring(f"<root>{content}</root>")
    return ["".join(td.itertext()) for td in root.iter("TD")]


def facts(text):
    """{title: (value text, grad text or None)} and the edges by title, from viz's DOT."""
    nodes, edges, graph = parse_dot(text)
    by_id = {}
    for node_id, a in nodes.items():
        rows = label_rows(a)
        assert rows[1].startswith("value ")
        grad = None
        if len(rows) == 3:
            assert rows[2].startswith("grad ")
            grad = rows[2][5:]
        by_id[node_id] = (rows[0], rows[1][6:], grad)
    return by_id, edges, graph


def leaves(**values):
    return [fg.tensor(v, requires_grad=True, name=k) for k, v in values.items()]


def add_mul():
    x, y, z = leaves(x=-2.0, y=5.0, z=-4.0)
    return (x + y) * z


# ------------------------------------------------------------------------------------------------
# the lecture's (x + y) z


def test_add_mul_nodes_edges_values_and_gradients():
    f = add_mul()
    f.backward(keep_grads=True)
    by_id, edges, graph = facts(viz.to_dot(f))
    by_title = {title: (node_id, value, grad) for node_id, (title, value, grad) in by_id.items()}
    assert sorted(by_title) == ["add", "mul", "x", "y", "z"]
    expected = {"x": (-2, -4), "y": (5, -4), "z": (-4, 3), "add": (3, -4), "mul": (-12, 1)}
    for title, (value, grad) in expected.items():
        _, v, g = by_title[title]
        assert (float(v), float(g)) == (value, grad), title
    ids = {title: node_id for title, (node_id, _, _) in by_title.items()}
    # data flow: inputs -> op, the add's edges before the mul's, inputs in argument order
    assert edges == [(ids["x"], ids["add"]), (ids["y"], ids["add"]), (ids["add"], ids["mul"]),
                     (ids["z"], ids["mul"])]
    assert "values only" not in graph["label"][1]


@pytest.mark.parametrize("backward", [None, "plain"])
def test_without_kept_gradients_only_values_and_the_title_says_so(backward):
    f = add_mul()
    if backward:
        f.backward()  # leaves get .grad, inner nodes keep nothing
    by_id, _, graph = facts(viz.to_dot(f))
    assert all(grad is None for _, _, grad in by_id.values())
    assert sorted(float(v) for _, v, _ in by_id.values()) == [-12, -4, -2, 3, 5]
    assert "values only" in graph["label"][1] and "keep_grads=True" in graph["label"][1]


def test_plain_backward_keeps_no_inner_gradients():
    f = add_mul()
    f.backward()
    assert f._node.grad is None and f._node.inputs[0]._node.grad is None


def test_names_constants_and_a_value_used_twice():
    x = fg.tensor(3.0, requires_grad=True, name="x")
    q = x * x
    q.name = "q"
    f = 1 / (1 + q)
    f.backward(keep_grads=True)
    nodes, edges, _ = parse_dot(viz.to_dot(f))
    titles = {node_id: label_rows(a)[0] for node_id, a in nodes.items()}
    (x_id,) = [i for i, t in titles.items() if t == "x"]
    (q_id,) = [i for i, t in titles.items() if t == "q = mul"]
    assert edges.count((x_id, q_id)) == 2  # one node for x, one edge per use
    rows = label_rows(nodes[x_id])
    assert float(rows[2][5:]) == pytest.approx(-2 * 3 / 10**2, rel=1e-3)  # d/dx 1/(1+x^2)
    consts = [i for i, t in titles.items() if t == "const"]
    assert len(consts) == 2  # the two 1s
    for i in consts:
        assert len(label_rows(nodes[i])) == 2  # value, no gradient
        assert nodes[i]["style"][1] == "dashed"
    assert nodes[[i for i, t in titles.items() if t == "div"][0]]["penwidth"][1] == "2"  # the root


def test_a_loss_draws_its_labels_as_a_constant_input():
    W = fg.tensor([[1.0, -1.0, 0.5], [0.0, 2.0, -0.5]], requires_grad=True, name="W")
    x = fg.tensor([[1.0, 2.0], [-1.0, 0.5]], name="x")
    loss = fg.softmax_cross_entropy(x @ W, [2, 0])
    loss.backward(keep_grads=True)
    nodes, edges, _ = parse_dot(viz.to_dot(loss))
    titles = {node_id: label_rows(a)[0] for node_id, a in nodes.items()}
    (labels_id,) = [i for i, t in titles.items() if t == "labels"]
    (loss_id,) = [i for i, t in titles.items() if t == "softmax_cross_entropy"]
    (matmul_id,) = [i for i, t in titles.items() if t == "matmul"]
    assert edges.count((labels_id, loss_id)) == 1 and edges.count((matmul_id, loss_id)) == 1
    assert edges.index((matmul_id, loss_id)) < edges.index((labels_id, loss_id))  # argument order
    rows = label_rows(nodes[labels_id])
    assert len(rows) == 2 and rows[1] == "value [2, 0]"  # its value and no gradient row
    assert nodes[labels_id]["style"][1] == "dashed"


def test_arrays_small_in_full_large_as_shape_and_summary():
    rng = np.random.default_rng(0)
    W = fg.tensor(rng.standard_normal((30, 40), np.float32), requires_grad=True, name="W")
    v = fg.tensor([0.25, -0.5], requires_grad=True, name="v")
    f = (W * W).sum() + (v * v).sum()
    f.backward(keep_grads=True)
    by_id, _, _ = facts(viz.to_dot(f))
    rows = {title: (value, grad) for title, value, grad in by_id.values()}
    assert rows["v"] == ("[0.25, -0.5]", "[0.5, -1]")
    value, grad = rows["W"]
    for text, a in ((value, W.data), (grad, 2 * W.data)):
        m = re.fullmatch(r"\(30, 40\) min (\S+) mean (\S+) max (\S+)", text)
        assert m, text
        np.testing.assert_allclose([float(s) for s in m.groups()], [a.min(), a.mean(), a.max()], rtol=1e-3)


def test_format_array_numbers():
    assert viz.format_array(np.float32(-12.0)) == "-12"
    assert viz.format_array(-0.0) == "0"
    assert viz.format_array(1 / 3) == "0.3333"
    assert viz.format_array(123456.0) == "1.235e+05"
    assert viz.format_array(np.inf) == "inf"
    assert viz.format_array(np.zeros((0, 3))) == "(0, 3) empty"
    assert viz.format_array([[1, 2], [3, 4]]) == "[[1, 2], [3, 4]]"


def test_a_leaf_alone():
    x = fg.tensor([1.0, 2.0], requires_grad=True, name="x")
    nodes, edges, graph = parse_dot(viz.to_dot(x))
    assert edges == [] and [label_rows(a) for a in nodes.values()] == [["x", "value [1, 2]"]]


NASTY = ['a"b', "<i>&amp;", "}{;->", "back\\slash", "x]=["]


def nasty_graph():
    ts = [fg.tensor(float(i), requires_grad=True, name=n) for i, n in enumerate(NASTY)]
    f = ts[0]
    for t in ts[1:]:
        f = f + t
    f.name = 'root "f" \\ {}'
    f.backward(keep_grads=True)
    return f


def test_labels_are_escaped():
    f = nasty_graph()
    text = viz.to_dot(f)
    nodes, edges, graph = parse_dot(text)
    titles = [label_rows(a)[0] for a in nodes.values()]
    assert [t for t in titles if t in NASTY] == NASTY
    assert 'root "f" \\ {}' in graph["label"][1]
    assert len(edges) == 2 * (len(NASTY) - 1)


def test_newline_in_a_name_stays_inside_the_label():
    x = fg.tensor(1.0, requires_grad=True, name="two\nlines")
    text = viz.to_dot(x * 2)
    parse_dot(text)
    assert "two<BR/>lines" in text


def test_rankdir_is_checked():
    with pytest.raises(ValueError, match="rankdir"):
        viz.to_dot(add_mul(), rankdir="sideways")


# ------------------------------------------------------------------------------------------------
# a 10,000-op graph


@pytest.fixture(scope="module")
def big_dot(tmp_path_factory):
    """A chain of 10,000 ops (mul by a constant, add a shared leaf), backpropagated with kept grads,
    drawn to DOT; returns (dot text, seconds for to_dot + draw to .dot)."""
    x = fg.tensor(0.5, requires_grad=True, name="x")
    y = x
    for _ in range(5000):
        y = y * 0.999 + x
    y.backward(keep_grads=True)
    path = tmp_path_factory.mktemp("big") / "big.dot"
    start = time.perf_counter()
    text = viz.to_dot(y)
    viz.draw(y, path)
    seconds = time.perf_counter() - start
    assert path.read_text() == text
    return text, seconds


def test_big_graph_is_fast(big_dot):
    assert big_dot[1] < 5.0


def test_big_graph_structure(big_dot):
    nodes, edges, _ = parse_dot(big_dot[0])
    assert len(nodes) == 10_000 + 5000 + 1  # ops, constants, x
    assert len(edges) == 20_000
    for a in list(nodes.values())[:50]:
        label_rows(a)


def test_big_graph_parses_with_graphviz(big_dot, tmp_path):
    # Graphviz's own parser (nop, from the graphviz package): dot's layout of 10,000 nodes would take
    # minutes, so the full dot render is checked on smaller graphs below.
    nop = shutil.which("nop")
    if nop is None:
        pytest.skip("Graphviz's nop is not on PATH (apt-get install graphviz)")
    path = tmp_path / "big.dot"
    path.write_text(big_dot[0])
    done = subprocess.run([nop, str(path)], capture_output=True, text=True)
    assert done.returncode == 0 and not done.stderr, done.stderr


# ------------------------------------------------------------------------------------------------
# draw()

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot is not on PATH")


def medium_graph(n=150):
    """n array ops in a chain (dot's layout time grows fast with fan-out, so no shared leaf)."""
    x = fg.tensor(np.linspace(-1, 1, 8), requires_grad=True, name="x")
    y = x
    for _ in range(n // 3):
        y = fg.tanh(y * 1.1 + 0.1)
    f = y.sum()
    f.backward(keep_grads=True)
    return f


@needs_dot
@pytest.mark.parametrize("make", [add_mul, nasty_graph, medium_graph])
def test_draw_svg_with_dot(make, tmp_path):
    f = make()
    if f._node.grad is None:
        f.backward(keep_grads=True)
    nodes, _, _ = parse_dot(viz.to_dot(f))
    out = viz.draw(f, tmp_path / "g.svg")
    assert out == tmp_path / "g.svg"
    svg = ET.parse(out).getroot()
    ns = {"s": "http://www.w3.org/2000/svg"}
    drawn = svg.findall(".//s:g[@class='node']", ns)
    assert len(drawn) == len(nodes)
    texts = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    if make is add_mul:
        assert "value -12" in texts and "grad 3" in texts
    if make is nasty_graph:
        assert set(NASTY) <= set(texts)


@needs_dot
def test_draw_png_with_dot(tmp_path):
    f = add_mul()
    f.backward(keep_grads=True)
    out = viz.draw(f, tmp_path / "g.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_draw_without_dot_writes_dot_and_says_how_to_render(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert shutil.which("dot") is None
    f = add_mul()
    f.backward(keep_grads=True)
    out = viz.draw(f, tmp_path / "g.svg")
    assert out == tmp_path / "g.dot" and not (tmp_path / "g.svg").exists()
    assert out.read_text() == viz.to_dot(f)
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert "apt-get install graphviz" in lines[0] and f"dot -Tsvg {out} -o {tmp_path / 'g.svg'}" in lines[0]


def test_draw_without_which_finding_dot(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    out = viz.draw(add_mul(), tmp_path / "g.png")
    assert out.suffix == ".dot" and "values only" in out.read_text()
    assert "-Tpng" in capsys.readouterr().err


def test_draw_dot_suffix_writes_text_and_never_calls_dot(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("dot called"))
    f = add_mul()
    for suffix in (".dot", ".gv"):
        out = viz.draw(f, tmp_path / f"g{suffix}")
        assert out.read_text() == viz.to_dot(f)
    assert capsys.readouterr().err == ""


def test_draw_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"\.svg, \.png"):
        viz.draw(add_mul(), tmp_path / "g.jpg")


def fake_dot(tmp_path, monkeypatch, body):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "dot"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))


def test_draw_reports_a_failing_dot(tmp_path, monkeypatch):
    fake_dot(tmp_path, monkeypatch, 'echo "Error: something broke" >&2; exit 3')
    with pytest.raises(RuntimeError, match="exit 3.*something broke"):
        viz.draw(add_mul(), tmp_path / "g.svg")


def test_draw_times_out(tmp_path, monkeypatch):
    fake_dot(tmp_path, monkeypatch, "exec /bin/sleep 10")
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="more than 0.3 s"):
        viz.draw(add_mul(), tmp_path / "g.svg", timeout=0.3)
    assert time.perf_counter() - start < 5

