"""Build configuration of the C extension; everything else is in pyproject.toml.

pipeline._rlekernel encodes polygon and run-list batches to COCO compressed RLE (see
pipeline/_rlekernel.c). It must be compiled without floating-point contraction and without
fast-math: a fused multiply-add changes pycocotools' ``ys + s*t + .5`` in its last bit, and
with it the pixels of some polygons.

pipeline._jsonscan is the structural JSON scan of pipeline.ingest.scan (quotes, escapes,
bracket depth) over one block at a time; it is built with the same flags.

pipeline._jsonpoly reads polygon segmentations (and the runs of uncompressed RLE) from a
chunk's JSON text into flat float64 (int64) arrays (see pipeline/_jsonpoly.c); built with the same flags, its one-operation fast path
relies on IEEE double arithmetic without extended precision or fast-math.

The three include pipeline/_cvec.h, their one growable buffer.

-O3 rather than -O2: the same IEEE arithmetic (no contraction, no fast-math, so no
reassociation either), and the polygon kernel 3.3 µs per annotation against 3.6
(``python benchmarks/bench_kernel.py``); a one-worker ingest of the train2017-scale file
4-12% faster, paired against an -O2 build.
"""

import sys

from setuptools import Extension, setup

if sys.platform == "win32":
    STRICT_FP = ["/fp:strict"]
else:
    STRICT_FP = ["-O3", "-ffp-contract=off", "-fno-fast-math"]

# the growable buffer the three share (header only); setuptools puts depends into the sdist
DEPENDS = ["pipeline/_cvec.h"]

setup(ext_modules=[
    Extension(f"pipeline.{name}", [f"pipeline/{name}.c"], depends=DEPENDS, extra_compile_args=STRICT_FP)
    for name in ("_rlekernel", "_jsonscan", "_jsonpoly")
])
