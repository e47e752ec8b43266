"""Run every benchmark (or those named on the command line), one after another, each in its own process.

`python -m benchmarks` or `make bench`; `python -m benchmarks facade` runs benchmarks/facade.py only.
Each benchmark prints its own table; figures from one run are comparable with each other.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).parent


def main(names: list[str]) -> int:
    scripts = sorted(path for path in HERE.glob("*.py") if not path.name.startswith("_"))
    if names:
        scripts = [path for path in scripts if path.stem in names]
    failures = 0
    for script in scripts:
        print(f"\n== {script.stem} ==", flush=True)
        failures += subprocess.call([sys.executable, "-m", f"benchmarks.{script.stem}"], cwd=HERE.parent) != 0
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
