"""`turnlog` with every prometheus-client metric a no-op: the "metrics off" side of the lifecycle A/B (docs/benchmarks.md).

    python benchmarks/serve_without_metrics.py serve --engine scripted --token-delay-ms 0 --answer-tokens 20 --port 8000 --data-dir DIR
    python benchmarks/lifecycle.py --url http://127.0.0.1:8000 --data-dir DIR
"""
import sys
from pathlib import Path

import prometheus_client


class _NoOp:
    def __init__(self, *args, **kwargs):
        pass

    def labels(self, *args, **kwargs):
        return self

    def observe(self, *args, **kwargs):
        pass

    def inc(self, *args, **kwargs):
        pass

    def dec(self, *args, **kwargs):
        pass

    def set(self, *args, **kwargs):
        pass


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
prometheus_client.Counter = prometheus_client.Gauge = prometheus_client.Histogram = _NoOp

from turnlog.cli import main  # noqa: E402

sys.exit(main())
