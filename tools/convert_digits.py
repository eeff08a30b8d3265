"""Convert scikit-learn's copy of the UCI digits into fastgrad/datasets/digits.npz (run once).

The 8x8 "Optical Recognition of Handwritten Digits" test set (E. Alpaydin, C. Kaynak, 1998; UCI ML
Repository, CC BY 4.0) ships inside scikit-learn's wheel as sklearn/datasets/data/digits.csv.gz:
1,797 rows of 64 pixel counts in 0..16 followed by the label 0..9. fastgrad does not depend on
scikit-learn; this script only reads that CSV:

    pip download --no-deps -d /tmp/skl scikit-learn
    cd /tmp/skl && unzip -o scikit_learn-*.whl sklearn/datasets/data/digits.csv.gz
    python tools/convert_digits.py /tmp/skl/sklearn/datasets/data/digits.csv.gz

It writes images (1797, 8, 8) uint8 and labels (1797,) uint8 with np.savez_compressed.
"""
import argparse
import gzip
from pathlib import Path

import numpy as np


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("csv_gz", type=Path, help="path to sklearn/datasets/data/digits.csv.gz")
    p.add_argument("--out", type=Path,
                   default=Path(__file__).resolve().parent.parent / "fastgrad" / "datasets" / "digits.npz")
    args = p.parse_args()
    with gzip.open(args.csv_gz, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.shape != (1797, 65) or table[:, :64].min() < 0 or table[:, :64].max() > 16:
        raise SystemExit(f"unexpected digits table: shape {table.shape}")
    images = table[:, :64].astype(np.uint8).reshape(-1, 8, 8)
    labels = table[:, 64].astype(np.uint8)
    if sorted(np.unique(labels)) != list(range(10)):
        raise SystemExit("unexpected digit labels")
    np.savez_compressed(args.out, images=images, labels=labels)
    print(f"wrote {args.out}: {len(labels)} images, {args.out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
