"""Inference: detection, recognition (embed, verify, search) and export."""
