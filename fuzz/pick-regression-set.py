#!/usr/bin/env python3
"""Pick the regression set for tests/fixtures/hl7v2/fuzz/ from a (cmin'd) corpus directory.

Each input's edges are measured alone (a libFuzzer merge of that one file, counters and value
profile off), then inputs are taken greedily by how many edges they add, smallest first on ties,
until MAX_FILES or MAX_BYTES is reached or nothing new is added. Run from fuzz/ after
`cargo fuzz build -s none parse_map_ack`:

    python3 pick-regression-set.py corpus/parse_map_ack ../tests/fixtures/hl7v2/fuzz

Existing files in the destination are kept (crash inputs must stay); picked files are copied in
under their libFuzzer (SHA-1) names.
"""

import os
import shutil
import subprocess
import sys
import tempfile

MAX_FILES = 185
MAX_BYTES = 900_000
TARGET = os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "x86_64-unknown-linux-gnu/release/parse_map_ack")


def edges(path):
    with tempfile.TemporaryDirectory() as tmp:
        inputs, out, control = (os.path.join(tmp, d) for d in ("in", "out", "control"))
        os.mkdir(inputs)
        os.mkdir(out)
        shutil.copy(path, inputs)
        subprocess.run(
            [TARGET, "-merge=1", "-use_counters=0", "-use_value_profile=0", "-max_len=4096",
             f"-merge_control_file={control}", out, inputs],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
        )
        with open(control) as f:
            return {int(x) for line in f if line.startswith("FT ") for x in line.split()[2:]}


def main(corpus, destination):
    files = [os.path.join(corpus, name) for name in sorted(os.listdir(corpus))]
    measured = [(path, os.path.getsize(path), edges(path)) for path in files]
    covered, picked, size = set(), [], 0
    while measured and len(picked) < MAX_FILES:
        best = max(measured, key=lambda m: (len(m[2] - covered), -m[1]))
        if not best[2] - covered:
            break
        measured.remove(best)
        if size + best[1] > MAX_BYTES:
            continue
        picked.append(best[0])
        covered |= best[2]
        size += best[1]
    for path in picked:
        shutil.copy(path, destination)
    total = len(set().union(*(m[2] for m in measured), covered))
    print(f"picked {len(picked)} inputs, {size} bytes, {len(covered)} of {total} edges")


if __name__ == "__main__":
    main(*sys.argv[1:3])
