"""Safety stages' building blocks: the classifier port and its adapters, the policies file, and the pure decision."""
