"""The pipeline's DVC stages, one module each (``python -m stages.<name>``).

Under ``python -m stages.run`` a stage command hands itself to a warm zygote process here,
before anything heavy is imported (:mod:`stages._zygote`); elsewhere this does nothing.
"""

import os as _os
import sys as _sys

if _os.environ.get("VOXFACE_ZYGOTE") and _sys.argv[:1] == ["-m"]:
    from stages._zygote import hand_off as _hand_off

    _hand_off()
