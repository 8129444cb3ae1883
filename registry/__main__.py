"""``python -m registry``: the release managers' command line."""

from registry.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
