"""Project data-parallel speed-up to many nodes from measured step times (the cost model of docs/DISTRIBUTED.md).

    python bench/projection.py bench/distributed.json          # from bench/distributed.py --json
    python bench/projection.py --step-ms 1x1=21 1x2=12 2x1=11.5 # or from numbers you measured

Model (weak scaling: every node keeps the measured per-node batch of 256 rows, so the global batch is
256 p): one step on p nodes takes the measured node step t_node (its compute, plus for 2x1 the
allreduce between its two ranks) plus a ring allreduce of the gradient buffer between the nodes,
    t_ring(p) = 2 (p - 1) / p * bytes / bandwidth + 2 (p - 1) * latency,
with no overlap of communication and backward (fastgrad sends one Allreduce after backward). The
speed-up is the throughput ratio p * t_node / (t_node + t_ring(p)) against one such node.
"""
from __future__ import annotations

import argparse
import json
import sys

NODES = (8, 64, 512)


def ring_seconds(p: int, nbytes: float, bandwidth_bits: float, latency_s: float) -> float:
    """Time of a ring allreduce of nbytes over p members: 2(p-1)/p * bytes/bandwidth + 2(p-1) * latency."""
    if p <= 1:
        return 0.0
    return 2 * (p - 1) / p * nbytes / (bandwidth_bits / 8) + 2 * (p - 1) * latency_s


def table(step_s: dict, nbytes: float, bandwidth_bits: float, latency_s: float, nodes=NODES) -> str:
    rows = ["| node layout | node step (ms) | " + " | ".join(f"{p} nodes: step (ms), speed-up" for p in nodes) + " |",
            "|---|---|" + "---|" * len(nodes)]
    for layout, t in step_s.items():
        cells = []
        for p in nodes:
            total = t + ring_seconds(p, nbytes, bandwidth_bits, latency_s)
            cells.append(f"{total * 1e3:.1f} ms, {p * t / total:.0f}x ({t / total:.0%} efficiency)")
        rows.append(f"| {layout} | {t * 1e3:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("json", nargs="?", help="results of bench/distributed.py --json")
    p.add_argument("--step-ms", nargs="*", default=None, metavar="LAYOUT=MS",
                   help="measured node step times instead of a JSON file, e.g. 1x1=21")
    p.add_argument("--params", type=int, default=3072 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10,
                   help="parameters in the gradient buffer (default: the cifar MLP, 1,707,274)")
    p.add_argument("--bytes-per-value", type=int, default=4, help="4 for float32 gradients")
    p.add_argument("--bandwidth-gbit", type=float, default=25.0)
    p.add_argument("--latency-us", type=float, default=10.0)
    args = p.parse_args(argv)
    if args.json:
        with open(args.json) as f:
            data = json.load(f)
        steps = {k: v["step_s"] for k, v in data["layouts"].items()}
        params = data.get("params", args.params)
        load = data.get("load")
    elif args.step_ms:
        steps = {}
        for item in args.step_ms:
            layout, _, ms = item.partition("=")
            steps[layout] = float(ms) / 1e3
        params, load = args.params, None
    else:
        p.error("give a JSON file or --step-ms")
    nbytes = (params + 1) * args.bytes_per_value  # + the loss slot
    bw, lat = args.bandwidth_gbit * 1e9, args.latency_us * 1e-6
    print(f"gradient buffer {params:,} values = {nbytes / 1e6:.2f} MB; network {args.bandwidth_gbit:g} Gb/s, "
          f"{args.latency_us:g} us; ring allreduce: " + ", ".join(
              f"{q} nodes {ring_seconds(q, nbytes, bw, lat) * 1e3:.2f} ms" for q in NODES)
          + (f"; measured at load average {load[0]:.1f}-{load[1]:.1f}" if load else ""))
    print()
    print(table(steps, nbytes, bw, lat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
