"""Heavy libraries imported from several threads at once: each gets the whole module (kernel/lazy_imports.py)."""

import subprocess
import sys
import textwrap

import pytest

from kernel.lazy_imports import lazy_attribute


def test_it_is_from_module_import_name() -> None:
    assert lazy_attribute("json", "dumps")({"a": 1}) == '{"a": 1}'
    with pytest.raises(AttributeError):
        lazy_attribute("json", "no_such_name")


@pytest.mark.slow  # a fresh interpreter imports transformers and sentence-transformers
def test_first_imports_of_the_model_libraries_from_many_threads_at_once_all_succeed() -> None:
    """What a soak run hit: the embedding model loading while an upload's chunker loaded its tokenizer."""
    script = textwrap.dedent("""
        import os, threading
        os.environ["HF_HUB_OFFLINE"] = "1"
        from kernel.lazy_imports import lazy_attribute
        # Without the lock this pair fails in about 3 runs out of 4 (accelerate imported from two sides at once).
        wanted = [("sentence_transformers", "SentenceTransformer"), ("transformers", "AutoTokenizer")]
        barrier, failures = threading.Barrier(len(wanted)), []
        def load(module, name):
            barrier.wait()
            try:
                lazy_attribute(module, name)
            except Exception as error:
                failures.append(repr(error))
        threads = [threading.Thread(target=load, args=pair) for pair in wanted]
        for thread in threads: thread.start()
        for thread in threads: thread.join()
        print("failures:", failures)
        raise SystemExit(1 if failures else 0)
    """)
    for _ in range(2):  # fresh interpreters: the race is in the first import only
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
