"""Document ingestion: detecting, extracting and chunking uploaded documents (the pure parts and their ports)."""
