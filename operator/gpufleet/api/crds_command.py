"""`gpufleet crds`: print the generated CRDs, or write them where they are committed."""

from __future__ import annotations

import argparse
import pathlib
import sys

from gpufleet.api import crds


def run(args: argparse.Namespace) -> int:
    """Print every CRD as a YAML stream, or write one file per CRD into each `--output-dir`."""
    rendered = {name: crds.render(crd) for name, crd in crds.all_crds().items()}
    if not args.output_dir:
        sys.stdout.write("---\n".join(rendered.values()))
        return 0
    for directory in map(pathlib.Path, args.output_dir):
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in rendered.items():
            (directory / name).write_text(text, encoding="utf-8")
    return 0
