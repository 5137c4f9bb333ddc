"""Evaluation: verification (k-fold accuracy, ROC, TAR@FAR) and identification (CMC, DIR@FPIR)."""
