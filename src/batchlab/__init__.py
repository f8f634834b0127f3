"""batchlab: how batch size shapes neural-network training, as a reproducible study."""

__version__ = "0.1.0"
