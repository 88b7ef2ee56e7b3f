"""``dvc``, with its lock-file updates spared a re-parse: ``python -m pipeline.dvc_run <args>``.

After each stage it runs, ``dvc repro`` updates ``dvc.lock`` with ruamel's round-trip YAML
(``dvc.utils.serialize.modify_yaml``): it parses the whole file (keeping its layout), replaces
the stage's entry and writes the file back. The parse is most of that work, and it grows with the
pipeline: 0.59 CPU-s for the tiny preset's 3,026-line lock, 1.5 CPU-s for the default one's
7,494 lines, after every stage. From the second stage on, the text it parses is the text this
same process has just written.

So this module keeps, per file, the text it last wrote and a deep copy of the structure that text
was dumped from (0.085 CPU-s on the tiny lock); a later read of that file that finds exactly
that text gets the kept structure instead of a parse, once. Dumping the kept structure gives the
bytes that dumping the parse of its text gives (ruamel's round trip; DVC relies on it, or every
``dvc repro`` would rewrite the lock), so ``dvc.lock`` is the bytes plain ``dvc`` writes
(``tests/test_dvc_run.py`` compares them over successive updates, and the end-to-end tests'
forced reruns change no tracked file through it). Any other text (a first read, the file edited
in between) is parsed as DVC parses it. Only the two module functions of
``dvc.utils.serialize._yaml`` that ``modify_yaml`` calls are wrapped, and only when they are there
as this module expects; otherwise, or with ``VOXFACE_DVC_LOCK_CACHE=0``, it is plain ``dvc``.

``python -m stages.run dvc ...`` and ``python -m pipeline.ablate`` run ``dvc`` through it.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TextIO

#: Per file (absolute path): the text last written there and a copy of what it was dumped from.
_written: dict[str, tuple[str, Any]] = {}
_MARK = "_voxface_lock_cache"


def _key(path: Any) -> str | None:
    if not isinstance(path, (str, os.PathLike)):
        return None
    return os.path.abspath(os.fspath(path))


def _wrap(
    parse: Callable[[str, Any], Any], dump: Callable[[Any, TextIO], Any]
) -> tuple[Callable[[str, Any], Any], Callable[[Any, TextIO], Any]]:
    def parse_for_update(text: str, path: Any) -> Any:
        key = _key(path)
        kept = _written.pop(key, None) if key is not None else None
        if kept is not None and kept[0] == text:
            return kept[1]  # used once: a read that is not dumped back leaves nothing behind
        return parse(text, path)

    def dump_and_keep(data: Any, stream: TextIO) -> Any:
        key = _key(getattr(stream, "name", None))
        if key is None:
            return dump(data, stream)
        buf = io.StringIO()
        out = dump(data, buf)
        text = buf.getvalue()
        stream.write(text)
        _written[key] = (text, copy.deepcopy(data))
        return out

    setattr(parse_for_update, _MARK, parse)
    setattr(dump_and_keep, _MARK, dump)
    return parse_for_update, dump_and_keep


def install() -> bool:
    """Wrap DVC's round-trip YAML parse and dump in this process; whether it is wrapped."""
    if os.environ.get("VOXFACE_DVC_LOCK_CACHE", "1") == "0":
        return False
    try:
        from dvc.utils.serialize import _yaml
    except ImportError:
        return False
    parse = getattr(_yaml, "parse_yaml_for_update", None)
    dump = getattr(_yaml, "_dump", None)
    if (
        not callable(parse)
        or not callable(dump)
        or not callable(getattr(_yaml, "modify_yaml", None))
    ):
        return False
    if hasattr(parse, _MARK):
        return True
    _yaml.parse_yaml_for_update, _yaml._dump = _wrap(parse, dump)
    return True


def uninstall() -> None:
    """Put DVC's own functions back (and forget what was kept)."""
    from dvc.utils.serialize import _yaml

    for name in ("parse_yaml_for_update", "_dump"):
        fn = getattr(_yaml, name)
        if hasattr(fn, _MARK):
            setattr(_yaml, name, getattr(fn, _MARK))
    _written.clear()


@contextlib.contextmanager
def installed() -> Iterator[bool]:
    """:func:`install` for the duration of a ``with`` block."""
    try:
        yield install()
    finally:
        uninstall()


def command(args: list[str]) -> list[str]:
    """The command line that runs ``dvc <args>`` through this module."""
    return [sys.executable, "-m", "pipeline.dvc_run", *args]


def main() -> int:
    install()
    from dvc.cli import main as dvc_main

    code: int = dvc_main(sys.argv[1:])
    return code


if __name__ == "__main__":
    sys.exit(main())
