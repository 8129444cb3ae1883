"""``python -m serving.sagemaker`` (the same group as ``python -m serving sagemaker``)."""

import sys

from serving.sagemaker.cli import main

if __name__ == "__main__":
    sys.exit(main())
