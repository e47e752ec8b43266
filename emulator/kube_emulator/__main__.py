"""``kube-emulator`` (or ``python -m kube_emulator``): serve the emulated API in the foreground."""

from __future__ import annotations

import argparse

from .cluster import serve


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve an emulated Kubernetes API on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6443)
    parser.add_argument("--kubeconfig", help="write a kubeconfig pointing at the server to this path")
    parser.add_argument("--crds", help="apply the CRDs found in the YAML files of this folder")
    args = parser.parse_args()
    serve(args.host, args.port, args.kubeconfig, args.crds)


if __name__ == "__main__":
    main()
