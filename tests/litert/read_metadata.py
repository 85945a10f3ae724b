"""Read a .tflite's metadata the way a Python user with only ai-edge-litert would, and print
it as JSON: the model's metadata entries (via LiteRT's own flatbuffer_utils), the
`min_runtime_version` string, the TFLite `ModelMetadata` (name, description, version, input
normalisation, output associated files) walked field by field with the flatbuffers runtime,
and the files packed after the model (a .tflite with metadata is also a zip archive).

An implementation independent of Kiln's writer, used by tests/litert_conformance.rs.

usage: read_metadata.py MODEL
"""
import json
import struct
import sys
import zipfile

import flatbuffers
from flatbuffers.table import Table
from ai_edge_litert.tools import flatbuffer_utils


def slot(table, index):
    """Offset of field `index` in `table`'s vtable (0 when absent)."""
    return table.Offset(4 + 2 * index)


def string(table, index):
    o = slot(table, index)
    return table.String(o + table.Pos).decode() if o else None


def tables(table, index):
    o = slot(table, index)
    if not o:
        return []
    start = table.Vector(o)
    return [Table(table.Bytes, table.Indirect(start + 4 * i)) for i in range(table.VectorLen(o))]


def floats(table, index):
    o = slot(table, index)
    if not o:
        return []
    start = table.Vector(o)
    return [struct.unpack_from("<f", table.Bytes, start + 4 * i)[0] for i in range(table.VectorLen(o))]


def union_table(table, index):
    """(type tag, table) of the union whose tag is field `index` and value field `index + 1`."""
    o = slot(table, index)
    tag = table.Get(flatbuffers.number_types.Uint8Flags, o + table.Pos) if o else 0
    v = slot(table, index + 1)
    return tag, (Table(table.Bytes, table.Indirect(v + table.Pos)) if v else None)


def tensor(t):
    norm = None
    for unit in tables(t, 4):  # process_units
        tag, options = union_table(unit, 0)
        if tag == 1 and options is not None:  # NormalizationOptions
            norm = {"mean": floats(options, 0), "std": floats(options, 1)}
    return {
        "name": string(t, 0),
        "normalization": norm,
        "associated_files": [string(f, 0) for f in tables(t, 6)],
    }


def model_metadata(buf):
    if buf[4:8] != b"M001":
        raise SystemExit("TFLITE_METADATA lacks the M001 identifier")
    root = Table(buf, flatbuffers.encode.Get(flatbuffers.packer.uoffset, buf, 0))
    subgraphs = tables(root, 3)
    return {
        "name": string(root, 0),
        "description": string(root, 1),
        "version": string(root, 2),
        "author": string(root, 4),
        "min_parser_version": string(root, 7),
        "inputs": [tensor(t) for t in tables(subgraphs[0], 2)] if subgraphs else [],
        "outputs": [tensor(t) for t in tables(subgraphs[0], 3)] if subgraphs else [],
    }


def main() -> int:
    path = sys.argv[1]
    model = flatbuffer_utils.read_model(path)
    entries = {}
    for entry in model.metadata or []:
        name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
        entries[name] = bytes(bytearray(model.buffers[entry.buffer].data))
    result = {"entries": sorted(entries)}
    if "min_runtime_version" in entries:
        result["min_runtime_version"] = entries["min_runtime_version"].split(b"\0")[0].decode()
    if "TFLITE_METADATA" in entries:
        result["metadata"] = model_metadata(bytearray(entries["TFLITE_METADATA"]))
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            result["files"] = {n: archive.read(n).decode() for n in archive.namelist()}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
