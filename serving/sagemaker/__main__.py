"""``python -m serving.sagemaker`` (the same group as ``python -m serving sagemaker``)."""

from serving.sagemaker.cli import sagemaker

if __name__ == "__main__":
    sagemaker(prog_name="python -m serving sagemaker")
