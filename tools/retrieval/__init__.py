"""The retrieval room: guideline passages from the knowledge store, quoted as data."""
