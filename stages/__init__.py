"""The pipeline's DVC stages, one module each (``python -m stages.<name>``).

Under ``python -m stages.run`` a stage command hands itself to a warm zygote process here,
before anything heavy is imported (:mod:`stages._zygote`, which checks that this process is
``python -m stages.<name>``). A stage command run on its own, without ``PREFECT_API_URL``,
starts its temporary Prefect server here instead, so that the server comes up while the stage
imports its libraries (:mod:`stages._server`). Imported any other way, this does nothing.
"""

import os as _os
from pathlib import Path as _Path

from stages._zygote import _module_of_command  # standard library only
from stages._zygote import hand_off as _hand_off

#: Where the stages and ``stages.run`` log how long they took: untracked (``.gitignore``), never
#: a DVC output, so a rerun that changes no result changes no tracked file.
TIMINGS = _Path("logs/timings")

if _os.environ.get("VOXFACE_ZYGOTE"):
    _hand_off()

if _module_of_command() is not None:  # a stage command, run fresh
    from stages._server import prestart as _prestart

    _prestart()  # unless PREFECT_API_URL names a server already
