"""`python -m gslbench` is the `gslbench` command."""

from gslbench.cli import main

main()
