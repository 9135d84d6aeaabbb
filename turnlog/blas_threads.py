"""numpy's BLAS: one thread per server process, unless the operator set OPENBLAS_NUM_THREADS or OMP_NUM_THREADS.

OpenBLAS (the BLAS in numpy's wheels) runs a matrix-vector product on every core, then keeps its worker threads
spinning in case another comes. The embedded index's vector search is one such product per question: at 100k chunks
it took 5.8 ms on two threads against 10.3 ms on one, and left a core spinning for ~110 ms of CPU after it, taken
from the event loop, SQLite and a reranker that ran next (docs/search.md, "One BLAS thread"). On one thread there
is no worker to spin. torch (the embedder, the reranker) has its own threads and is not affected.
"""

from __future__ import annotations

import os

BLAS_THREADS = 1


def limit_blas_threads(count: int = BLAS_THREADS) -> bool:
    """Limit numpy's BLAS to `count` threads from now on; whether it was limited (not where the operator chose)."""
    if "OPENBLAS_NUM_THREADS" in os.environ or "OMP_NUM_THREADS" in os.environ:
        return False
    import numpy  # noqa: F401  (threadpoolctl limits the libraries loaded so far: numpy's is the one to limit)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=count, user_api="blas")
    return True
