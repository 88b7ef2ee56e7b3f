"""Which project modules a module runs, read from the source, and a digest of their code.

Imports are read from the source (``import pipeline.x`` / ``from pipeline.x import y``, anywhere
in a module, followed transitively; parent packages count), so the answer does not depend on what
a process happened to import. The lineage test checks every DVC stage's ``deps`` against
:func:`runs`; the preprocessing stages name their shards with :func:`source_digest`, so that an
edit to the code that writes a shard gives the shard another name (it is redone, not reused).
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

#: The repository root (the folder holding ``pipeline/`` and ``stages/``).
REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages")


def module_file(name: str, root: Path = REPO) -> Path | None:
    """The source file of project module ``name`` (a package's ``__init__.py``), or None."""
    base = root / Path(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def imports(path: Path, root: Path = REPO) -> set[str]:
    """Project modules (``pipeline.*``, ``stages.*``) that ``path`` imports, anywhere in it."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from pipeline.x import y``: y may itself be a module
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        out |= {n for n in names if n.split(".")[0] in PACKAGES and module_file(n, root)}
    return out


def runs(module: str, root: Path = REPO) -> set[str]:
    """Root-relative files of every project module ``module`` runs (itself included); empty
    package ``__init__`` files are left out."""
    seen: set[str] = set()
    todo = [module]
    files: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        f = module_file(name, root)
        if f is None:
            raise ModuleNotFoundError(f"{name}: no such project module under {root}")
        if f.name != "__init__.py" or f.read_text().strip():
            files.add(f.relative_to(root).as_posix())
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run too
        todo += sorted(imports(f, root))
    return files


def source_digest(module: str, root: Path = REPO) -> str:
    """SHA-256 (hex) of the paths and bytes of every file :func:`runs` lists for ``module``."""
    h = hashlib.sha256()
    for rel in sorted(runs(module, root)):
        h.update(rel.encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return h.hexdigest()
