"""What a Python workload imports, read from its source: the packages its job environment must provide.

The job environment is checked against this list on the login node before the first job, so a
missing package is named there (with the file that needs it) instead of in a job's traceback.
"""

from __future__ import annotations

import ast
import functools
import sys
from pathlib import Path

from components.core.render import RUNTIME_DIR, RUNTIME_PACKAGE


def workload_imports(path: Path, _seen: frozenset[Path] = frozenset()) -> tuple[str, ...]:
    """Top-level packages a Python workload imports, minus the standard library and its own folder.

    Modules of the shipped runtime (`hpc_runtime.*`) count with their own imports. Imports guarded
    by `try: ... except ImportError` are optional and left out. Returns () for a file that does not
    parse (Python reports that itself, with the line, when the job runs).
    """
    try:
        stat = path.stat()
    except OSError:
        return ()
    # Every component plans at definitions load, in every step process: read each file version once.
    return _scan(path, stat.st_mtime_ns, stat.st_size, _seen)


@functools.lru_cache(maxsize=256)
def _scan(path: Path, _mtime_ns: int, _size: int, _seen: frozenset[Path]) -> tuple[str, ...]:
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return ()
    optional: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
            for inner in node.body:
                optional.update(id(n) for n in ast.walk(inner))
    local = {p.stem for p in path.parent.iterdir()}
    names: list[str] = []
    runtime: list[str] = []
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            dotted = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            dotted = [node.module] + ([f"{node.module}.{a.name}" for a in node.names] if node.module == RUNTIME_PACKAGE else [])
        elif isinstance(node, ast.ImportFrom) and node.level == 1 and path.resolve().parent == RUNTIME_DIR:
            # Inside the runtime package itself: `from .increment import commit`.
            dotted = [f"{RUNTIME_PACKAGE}.{node.module}"] if node.module else [f"{RUNTIME_PACKAGE}.{a.name}" for a in node.names]
        else:
            continue
        for name in dotted:
            head, _, rest = name.partition(".")
            if head == RUNTIME_PACKAGE:
                runtime += [rest.split(".")[0]] if rest else []
            else:
                names.append(head)
    for module in runtime:
        source = RUNTIME_DIR / f"{module}.py"
        if source.is_file() and source not in _seen:
            names += workload_imports(source, _seen | {source})
    return tuple(dict.fromkeys(n for n in names if n not in sys.stdlib_module_names and n not in local
                               and n not in (RUNTIME_PACKAGE, "__future__")))


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(k, ast.Name) and k.id in ("ImportError", "ModuleNotFoundError", "Exception") for k in kinds)
