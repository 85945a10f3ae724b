"""Print every scalar under a TensorBoard log directory, read with TensorBoard's own reader.

Used by Kiln's tests to check the TensorBoard logs Kiln writes with the `tensorboard`
package itself rather than with Kiln's own parser.

Usage: python read_scalars.py LOGDIR

Each run (a directory under LOGDIR, LOGDIR itself included, that holds `*tfevents*`
files) is loaded with TensorBoard's plugin event accumulator, whose loader applies
`data_compat`: legacy `simple_value` scalars arrive as tensors under the `scalars`
plugin, as do tensor-based scalars, so both kinds are read the same way. Prints JSON:
{"<run path relative to LOGDIR>": {"<tag>": [[step, value], ...], ...}, ...}
with each tag's points sorted by step. Non-finite values print as "nan", "inf", "-inf".
Exits 1 with a message on stderr when no run is found.
"""

import json
import math
import os
import sys

from tensorboard.backend.event_processing import io_wrapper
from tensorboard.backend.event_processing import plugin_event_accumulator as pea
from tensorboard.util import tensor_util


def read_run(path):
    acc = pea.EventAccumulator(path, size_guidance={pea.TENSORS: 0})  # 0: keep all
    acc.Reload()
    scalars = {}
    for tag in acc.PluginTagToContent("scalars"):
        points = []
        for event in acc.Tensors(tag):
            value = tensor_util.make_ndarray(event.tensor_proto).item()
            points.append((event.step, event.wall_time, value))
        points.sort(key=lambda p: (p[0], p[1]))
        scalars[tag] = [[s, v if math.isfinite(v) else str(v)] for s, _, v in points]
    return scalars


def main(argv):
    if len(argv) != 2:
        sys.exit("usage: read_scalars.py LOGDIR")
    logdir = argv[1]
    runs = sorted(io_wrapper.GetLogdirSubdirectories(logdir))
    if not runs:
        print(f"read_scalars.py: no TensorBoard runs (tfevents files) under {logdir!r}",
              file=sys.stderr)
        return 1
    out = {os.path.relpath(run, logdir): read_run(run) for run in runs}
    json.dump(out, sys.stdout, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
