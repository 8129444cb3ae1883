"""``python -m tracking``."""

from tracking.cli import cli

if __name__ == "__main__":
    cli(prog_name="python -m tracking")
