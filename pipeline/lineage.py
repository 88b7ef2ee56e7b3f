"""Which project modules a module runs, read from the source, and a digest of their code.

Imports are read from the source (``import pipeline.x`` / ``from pipeline.x import y``, anywhere
in a module, followed transitively; parent packages count), so the answer does not depend on what
a process happened to import. The lineage test checks every DVC stage's ``deps`` against
:func:`runs`; the preprocessing stages name their shards with :func:`source_digest`, so that an
edit to the code that writes a shard gives the shard another name (it is redone, not reused).
"""

from __future__ import annotations

import hashlib
import io
import tokenize
from collections.abc import Iterator
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


def _statements(source: str) -> Iterator[list[str]]:
    """The token strings of each simple statement of ``source`` (comments and line breaks left
    out), wherever it is: after a newline, an indent, a ``;`` or a compound statement's ``:``.

    Read with :mod:`tokenize`, not :func:`ast.parse`: in CPython 3.11 turning a parse tree into
    Python objects keeps one recursion counter per interpreter, and another thread in
    ``ast.parse`` at the same time (Prefect calls it for flows and tasks) fails both with
    "SystemError: AST constructor recursion depth mismatch"."""
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}
    ends = {tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    depth, stmt = 0, list[str]()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in skip:
            continue
        if tok.type == tokenize.OP and tok.string in "([{":
            depth += 1
        elif tok.type == tokenize.OP and tok.string in ")]}":
            depth -= 1
        if tok.type in ends or (tok.type == tokenize.OP and tok.string in (";", ":") and not depth):
            if stmt:
                yield stmt
            stmt = []
        else:
            stmt.append(tok.string)
    if stmt:
        yield stmt


def _imported(stmt: list[str]) -> list[str]:
    """The module names an ``import``/``from`` statement's tokens name (a ``from`` import's
    names as possible submodules too); [] for any other statement or a relative import."""
    if stmt[:1] == ["import"]:  # import a.b as c, d
        groups = " ".join(stmt[1:]).split(" , ")
        return ["".join(g.split(" as ")[0].split()) for g in groups]
    if stmt[:1] == ["from"] and "import" in stmt and stmt[1] != ".":
        cut = stmt.index("import")
        module = "".join(stmt[1:cut])
        words = [w for w in stmt[cut + 1 :] if w not in "()"]
        names = [w for i, w in enumerate(words) if w not in (",", "as") and words[i - 1] != "as"]
        return [module, *(f"{module}.{n}" for n in names if n != "*")]
    return []


#: :func:`imports`' answers, by file and root, with the file's (mtime, size, inode) when read:
#: reading a source's imports (tokenizing it) costs ~0.15 s per stage, checking it changed not.
_IMPORTS: dict[tuple[Path, Path], tuple[tuple[int, int, int], frozenset[str]]] = {}


def imports(path: Path, root: Path = REPO) -> set[str]:
    """Project modules (``pipeline.*``, ``stages.*``) that ``path`` imports, anywhere in it."""
    st = path.stat()
    stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    known = _IMPORTS.get((path, root))
    if known is not None and known[0] == stamp:
        return set(known[1])
    out: set[str] = set()
    for stmt in _statements(path.read_text()):
        names = _imported(stmt)
        out |= {n for n in names if n.split(".")[0] in PACKAGES and module_file(n, root)}
    _IMPORTS[(path, root)] = (stamp, frozenset(out))
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
