"""`python -m gpt2driver` runs the command line (same as the `gpt2driver` script)."""

from gpt2driver.cli import main

main()
