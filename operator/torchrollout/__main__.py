"""`python -m torchrollout` runs the command line."""

from torchrollout.cli import main

main()
