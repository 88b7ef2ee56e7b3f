"""Run a command (default: ``dvc repro``) with one Prefect server shared by all its stages.

Without a server, every stage process pays Prefect's start-up (a temporary server, 5-15 s).
``python -m stages.run dvc repro`` starts one server, exports ``PREFECT_API_URL`` to the command
and stops the server afterwards. With ``PREFECT_API_URL`` already set (your own ``prefect server
start``, e.g. to watch the runs in its UI), that server is used and nothing is started.
"""

from __future__ import annotations

import os
import subprocess
import sys

from stages._runtime import prefect_api


def main(argv: list[str] | None = None) -> int:
    cmd = list(sys.argv[1:] if argv is None else argv) or ["dvc", "repro"]
    with prefect_api() as url:
        env = {**os.environ, "PREFECT_API_URL": url}
        return subprocess.run(cmd, env=env, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
