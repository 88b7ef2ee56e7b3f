"""The pipeline's DVC stages, one module each (``python -m stages.<name>``).

Under ``python -m stages.run`` a stage command hands itself to a warm zygote process here,
before anything heavy is imported (:mod:`stages._zygote`, which checks that this process is
``python -m stages.<name>``); elsewhere this does nothing.
"""

import os as _os
from pathlib import Path as _Path

#: Where the stages and ``stages.run`` log how long they took: untracked (``.gitignore``), never
#: a DVC output, so a rerun that changes no result changes no tracked file.
TIMINGS = _Path("logs/timings")

if _os.environ.get("VOXFACE_ZYGOTE"):
    from stages._zygote import hand_off as _hand_off

    _hand_off()
