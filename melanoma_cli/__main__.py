"""`python -m melanoma_cli` runs the command-line tool."""

from melanoma_cli.cli import main

main()
