"""marginface: margin-based softmax face recognition (train, evaluate, deploy)."""

__version__ = "0.1.0"
