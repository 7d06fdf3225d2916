"""`make bench`: run every bench/bench_*.py and print one Markdown table (paste into docs/benchmarks.md).

`python bench/run.py core recorder` runs only those.
"""

from __future__ import annotations

import importlib.util
import platform
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from common import HEADER


def main(argv: list[str]) -> int:
    wanted = set(argv)
    rows = []
    for path in sorted(HERE.glob("bench_*.py")):
        name = path.stem.removeprefix("bench_")
        if wanted and name not in wanted:
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        assert spec.loader is not None
        spec.loader.exec_module(module)
        print(f"running {path.name} ...", file=sys.stderr, flush=True)
        for result in module.run():
            rows.append(result)
            print(result.row(), file=sys.stderr, flush=True)
    print(f"\nPython {platform.python_version()}, {platform.machine()}, "
          f"{len(__import__('os').sched_getaffinity(0))} cores\n")
    print(HEADER)
    for result in rows:
        print(result.row())
    return 1 if any(r.met is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
