"""The shared kernel: what every layer builds on and nothing in it imports from above.

Errors, the log port, the envelope and its Avro codec, the processor runtime and keyed state,
dead letters and the SSE line codec.
"""
