"""A second collection for the retrieval benchmarks: the API reference of 32 standard-library modules, from their docstrings.

A different kind of text from the Language Reference topics (`retrieval_quality.reference_topics`):
terse API documentation, one short section per function, class or method, with signatures as
headings, much of it repeating ("Return a new ...", "If *x* is ..."). It ships with every CPython,
so it needs no download; the docstrings are those of the Python that runs the benchmark (3.11 here:
the questions in `data/retrieval_eval_stdlib.json` quote them verbatim, and
`tests/benchmarks/test_retrieval_eval_set.py` checks each quote is still there).

Each module is one document: the module's docstring, then each public function and class (with
its public methods) under a heading of its signature, in name order.
"""

from __future__ import annotations

import importlib
import inspect
import re

from retrieval_quality import Block

__all__ = ["MODULES", "stdlib_documents"]

MODULES = (
    "argparse", "base64", "calendar", "collections", "contextlib", "copy", "csv", "difflib", "fnmatch", "functools",
    "glob", "gzip", "hashlib", "heapq", "itertools", "json", "logging", "os.path", "pathlib", "random", "secrets",
    "shlex", "shutil", "statistics", "string", "struct", "subprocess", "tempfile", "textwrap", "time", "urllib.parse",
    "uuid", "zipfile",
)


def stdlib_documents(modules: tuple[str, ...] = MODULES) -> dict[str, list[Block]]:
    """Each module's documentation as blocks (headings, paragraphs, preformatted examples), by module name."""
    return {name: _module_blocks(name) for name in modules}


def _module_blocks(name: str) -> list[Block]:
    module = importlib.import_module(name)
    blocks = [Block(kind="heading", text=f"{name} module", level=1), *_doc_blocks(inspect.getdoc(module) or "")]
    public = getattr(module, "__all__", None) or [member for member in dir(module) if not member.startswith("_")]
    for member_name in sorted(set(public)):
        member = getattr(module, member_name, None)
        if not (inspect.isfunction(member) or inspect.isclass(member) or inspect.isbuiltin(member)):
            continue
        if getattr(member, "__module__", None) not in (module.__name__, name, "posixpath"):
            continue  # re-exported from elsewhere: documented there
        doc = inspect.getdoc(member)
        if not doc:
            continue
        blocks += [Block(kind="heading", text=f"{name}.{member_name}{_signature(member)}", level=2), *_doc_blocks(doc)]
        if inspect.isclass(member):
            for method_name, method in sorted(vars(member).items()):
                if method_name.startswith("_") or not callable(method) or not method.__doc__:
                    continue
                if getattr(method, "__module__", None) not in (None, member.__module__):
                    continue  # patched in by another library once imported (transformers: `Logger.warning_once`)
                method_doc = inspect.getdoc(method)
                if method_doc and method_doc != doc:
                    blocks += [
                        Block(kind="heading", text=f"{name}.{member_name}.{method_name}{_signature(method)}", level=3),
                        *_doc_blocks(method_doc),
                    ]
    return blocks


def _signature(member: object) -> str:
    try:
        # Defaults that are functions print their address ("<function copy2 at 0x7f..>"): not the same twice. A list
        # of weak references (`logging.shutdown`'s handlers) is whatever the process has made so far.
        signature = re.sub(r" at 0x[0-9a-f]+", "", str(inspect.signature(member)))  # type: ignore[arg-type]
        return re.sub(r"\[<weakref[^\]]*\]", "[...]", signature)
    except (TypeError, ValueError):
        return "(...)"


def _doc_blocks(doc: str) -> list[Block]:
    """A docstring's paragraphs: indented or `>>>` ones are preformatted (examples), the rest prose."""
    blocks = []
    for part in re.split(r"\n\s*\n", doc):
        if not part.strip():
            continue
        lines = part.split("\n")
        if part.lstrip().startswith(">>>") or all(line.startswith((" ", "\t")) for line in lines if line.strip()):
            blocks.append(Block(kind="preformatted", text=part.rstrip()))
        else:
            blocks.append(Block(kind="paragraph", text=" ".join(line.strip() for line in lines)))
    return blocks
