"""Hybrid search over document chunks: the port (`index`), RRF (`fusion`), embeddings, and one adapter per engine."""
