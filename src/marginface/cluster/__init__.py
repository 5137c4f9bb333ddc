"""Clustering unnamed faces into people: kNN graph, algorithms, incremental assignment, metrics, calibration.

Entry points: `cluster_embeddings` (batch) and `assign_incremental` (new faces against clustered ones); the
cut is a cosine similarity, calibrated from an eval report by `calibrate.cluster_threshold`.
"""

from marginface.cluster.algorithms import METHODS, cluster_embeddings
from marginface.cluster.errors import ClusterInputError
from marginface.cluster.incremental import assign_incremental

__all__ = ["METHODS", "ClusterInputError", "assign_incremental", "cluster_embeddings"]
