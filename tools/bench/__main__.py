"""python -m tools.bench [NAME ...]: run the named benchmarks (all when none is named)."""

import importlib
import sys

BENCHES = ["float_cnn", "shift", "spiking", "binary", "calibrate", "tta", "tta_spiking", "link", "mcu"]

if __name__ == "__main__":
    for name in sys.argv[1:] or BENCHES:
        if name not in BENCHES:
            sys.exit(f"unknown benchmark {name!r}; known: {', '.join(BENCHES)}")
        print(importlib.import_module(f"tools.bench.{name}").main())
