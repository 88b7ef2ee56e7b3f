"""DVC lineage: every stage depends on every project module its command imports, and on no other.

The imports are read from the source (``import pipeline.x`` / ``from pipeline.x import y``,
anywhere in a module, followed transitively), so an edit to any module a stage runs makes that
stage stale. A module a stage imports but whose edits cannot change its results may be left out
only when ``dvc.yaml`` says so in :data:`NOT_RESULTS` below (none today).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from pipeline.lineage import imports, runs, source_digest
from tests.conftest import REPO

#: (stage, module path) pairs deliberately left out of a stage's deps, with the reason in dvc.yaml.
NOT_RESULTS: frozenset[tuple[str, str]] = frozenset()


def stage_runs(module: str, method: str | None) -> set[str]:
    """What a stage's command runs: its module's imports and, for a per-method stage whose code
    looks methods up in the registry, that method's module (imported by name at run time)."""
    files = runs(module)
    if method is not None and "pipeline/train/methods/registry.py" in files:
        from pipeline.train.methods.registry import lookup

        files |= runs(str(lookup(method).module))
    return files


def _stages() -> list[tuple[str, str, list[str]]]:
    """(stage name, command's module, deps) of every stage, matrix items expanded."""
    doc = YAML(typ="safe").load((REPO / "dvc.yaml").read_text())
    params = YAML(typ="safe").load((REPO / "params.yaml").read_text())
    out = []
    for name, stage in doc["stages"].items():
        items: list[dict[str, str]] = [{}]
        if "matrix" in stage:
            ref = stage["matrix"]["method"]  # the other matrix key, seed, adds no code
            node = params
            for part in ref.strip("${}").split("."):
                node = node[part]
            items = [{"item.method": m} for m in node]
        for item in items:
            deps = []
            for d in stage.get("deps", []):
                for k, v in item.items():
                    d = d.replace("${" + k + "}", v)
                deps.append(d)
            m = re.search(r"python -m (stages\.\w+)", stage["cmd"])
            assert m, stage["cmd"]
            out.append((name, m.group(1), item.get("item.method"), deps))
    return out


STAGES = _stages()


def _covered(f: str, deps: list[str]) -> bool:
    return any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize(("stage", "module", "method", "deps"), STAGES, ids=lambda x: str(x)[:30])
def test_stage_deps_cover_the_code_it_runs(
    stage: str, module: str, method: str | None, deps: list[str]
) -> None:
    ran = stage_runs(module, method)
    missing = sorted(f for f in ran if not _covered(f, deps) and (stage, f) not in NOT_RESULTS)
    assert not missing, f"dvc.yaml stage {stage!r} runs {missing} but does not depend on them"


@pytest.mark.parametrize("stage", sorted({s[0] for s in STAGES}))
def test_stage_deps_name_no_code_the_stage_does_not_run(stage: str) -> None:
    """The other direction: every code file in a stage's deps is one its command runs, so an
    edit elsewhere (the shard machinery, for a training stage) does not rerun it. A matrix stage
    shares one deps list among its methods: a file there is run by at least one of them."""
    items = [(module, method, deps) for name, module, method, deps in STAGES if name == stage]
    ran = set().union(*(stage_runs(module, method) for module, method, _ in items))
    extra = sorted({d for _, _, deps in items for d in deps if d.endswith(".py")} - ran)
    assert not extra, f"dvc.yaml stage {stage!r} depends on {extra}, which it does not run"


@pytest.mark.parametrize(("stage", "module", "method", "deps"), STAGES, ids=lambda x: str(x)[:30])
def test_a_per_method_stage_does_not_depend_on_other_methods(
    stage: str, module: str, method: str | None, deps: list[str]
) -> None:
    """``train@cid-1`` is not rerun by an edit to ``wen2021.py``: a per-method stage's deps name
    no other method's module (directly or through a folder)."""
    from pipeline.train.methods.registry import METHODS

    if method is None:
        return
    for other in METHODS:
        path = str(other.module).replace(".", "/") + ".py"
        if other.name != method:
            assert not _covered(path, deps), f"{stage} ({method}) depends on {path}"


def test_the_import_walk_finds_indirect_imports() -> None:
    files = runs("stages.voice")
    # stages.voice -> pipeline.preprocess.voice_features -> pipeline.preprocess.shards ->
    # pipeline.preprocess.media
    assert {
        "stages/voice.py",
        "pipeline/preprocess/voice_features.py",
        "pipeline/preprocess/shards.py",
    } <= files
    assert "pipeline/preprocess/media.py" in files and "pipeline/report/document.py" not in files
    # Training reads voice features through the table's schema: no decoding, VAD or shards.
    train = runs("stages.train")
    assert "pipeline/train/pairs.py" in train and "pipeline/schema.py" in train
    assert not {f for f in train if f.startswith("pipeline/preprocess/")} - {
        "pipeline/preprocess/__init__.py",
        "pipeline/preprocess/jpeg.py",
    }


def test_stages_do_not_import_each_other() -> None:
    """A stage module imports ``pipeline`` and the stage-support modules (``stages._*``), never
    another stage: what two stages share lives in one of those, so a stage's edit reruns it
    alone."""
    offenders = {
        (f.name, m)
        for f in sorted((REPO / "stages").glob("*.py"))
        for m in imports(f)
        if m.startswith("stages.") and not m.split(".")[1].startswith("_")
    }
    assert not offenders, f"stage modules importing other stages: {sorted(offenders)}"


def test_the_source_digest_follows_the_code_a_module_runs(tmp_path: Path) -> None:
    """An edit to any module ``stages.x`` runs changes its digest; an edit elsewhere does not."""
    for rel, text in {
        "stages/__init__.py": "",
        "stages/x.py": "import pipeline.a\n",
        "pipeline/__init__.py": "",
        "pipeline/a.py": "from pipeline import b\n",
        "pipeline/b.py": "B = 1\n",
        "pipeline/c.py": "C = 1\n",
    }.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert runs("stages.x", tmp_path) == {"stages/x.py", "pipeline/a.py", "pipeline/b.py"}
    before = source_digest("stages.x", tmp_path)
    (tmp_path / "pipeline/c.py").write_text("C = 2\n")
    assert source_digest("stages.x", tmp_path) == before
    (tmp_path / "pipeline/b.py").write_text("B = 2\n")
    assert source_digest("stages.x", tmp_path) != before
    # An edit that adds an import is followed, though the file's imports were read (and kept)
    # before: they are read again when the file's size, time or inode changed.
    (tmp_path / "pipeline/b.py").write_text("from pipeline import c\n")
    assert runs("stages.x", tmp_path) == {
        "stages/x.py", "pipeline/a.py", "pipeline/b.py", "pipeline/c.py"
    }  # fmt: skip
    with_c = source_digest("stages.x", tmp_path)
    (tmp_path / "pipeline/c.py").write_text("C = 3\n")
    assert source_digest("stages.x", tmp_path) != with_c


def _ast_imports(path: Path) -> set[str]:
    """The plain reading :func:`imports` replaces: every ``Import``/``ImportFrom`` node."""
    import ast

    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return {n for n in out if n.split(".")[0] in ("pipeline", "stages")}


def test_imports_read_from_tokens_match_the_syntax_tree(tmp_path: Path) -> None:
    """:func:`imports` tokenizes instead of calling ``ast.parse`` (not thread-safe in CPython
    3.11); on every project file, and on awkward forms, it finds what the syntax tree has."""
    from pipeline.lineage import module_file

    probe = tmp_path / "probe.py"
    probe.write_text(
        "import pipeline.params as p, stages._runtime\n"
        "if x: from pipeline.atomic import (atomic_path,\n    atomic_dir as d)  # comment\n"
        "def f():\n    y = {'a': 1}; import pipeline.schema\n"
        "from . import lineage\ns = 'import pipeline.cli'\n"
    )
    assert imports(probe) == {"pipeline.params", "stages._runtime", "pipeline.atomic",
                              "pipeline.schema"}  # fmt: skip
    files = [*REPO.glob("pipeline/**/*.py"), *REPO.glob("stages/*.py"), *REPO.glob("tests/*.py")]
    assert len(files) > 100
    for f in [probe, *files]:
        assert imports(f) == {n for n in _ast_imports(f) if module_file(n)}, f
