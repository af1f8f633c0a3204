"""memx: memory-augmented Transformers from PyTorch to deployment."""

__version__ = "0.1.0"
