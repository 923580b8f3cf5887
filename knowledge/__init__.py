"""Surgical guideline knowledge: corpus, ingestion, embeddings and the chromadb store."""
