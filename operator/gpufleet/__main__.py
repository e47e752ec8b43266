"""`python -m gpufleet` is the `gpufleet` command."""

from gpufleet import cli

cli.main()
