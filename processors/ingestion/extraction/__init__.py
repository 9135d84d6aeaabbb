"""Document extraction, pure over bytes: which kind of file an upload is, and its text as titled sections."""
