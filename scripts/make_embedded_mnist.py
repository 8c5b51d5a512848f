"""Cut the MNIST subset shipped inside the package (src/featvis/_embedded/).

The first 10,000 training and the first 2,000 test images of the official files, kept in
the IDX format so the package reads them with the same loader as a user's full folder.
Run once: python scripts/make_embedded_mnist.py ../shared/data/mnist
"""

import gzip
import struct
import sys
from pathlib import Path

SUBSET = {"train": 10_000, "t10k": 2_000}


def cut(src: Path, dst: Path, n: int) -> None:
    with gzip.open(src, "rb") as f:
        data = f.read()
    magic, count = struct.unpack(">II", data[:8])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * (ndim - 1), data[8 : 4 + 4 * ndim])
    assert count >= n, (src, count)
    item = 1
    for d in dims:
        item *= d
    header = struct.pack(">II", magic, n) + data[8 : 4 + 4 * ndim]
    payload = data[4 + 4 * ndim : 4 + 4 * ndim + n * item]
    with gzip.GzipFile(dst, "wb", mtime=0, compresslevel=9) as f:
        f.write(header + payload)


def main(root: str) -> None:
    out = Path(__file__).resolve().parents[1] / "src" / "featvis" / "_embedded"
    out.mkdir(parents=True, exist_ok=True)
    for prefix, n in SUBSET.items():
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            name = f"{prefix}-{kind}.gz"
            cut(Path(root) / name, out / name, n)
            print(out / name, (out / name).stat().st_size, "bytes")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/mnist")
