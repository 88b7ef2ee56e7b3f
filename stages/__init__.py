"""The pipeline's DVC stages, one module each (``python -m stages.<name>``).

Under ``python -m stages.run`` a stage command hands itself to a warm zygote process here,
before anything heavy is imported (:mod:`stages._zygote`, which checks that this process is
``python -m stages.<name>``); elsewhere this does nothing.
"""

import os as _os

if _os.environ.get("VOXFACE_ZYGOTE"):
    from stages._zygote import hand_off as _hand_off

    _hand_off()
