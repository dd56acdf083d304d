"""Imported by the forkserver of the stage pools only (see ``_procpool._main_preload``).

Imports the parent's main script once, the way a worker would (as ``__mp_main__``: code under
``if __name__ == "__main__":`` does not run), so that every worker forked afterwards inherits it
instead of importing it again. Any failure leaves things as they were: each worker then imports the
script itself, as Python does by default.
"""

import os
from multiprocessing import process, spawn

from asr_distill import settings

_path = settings.FORKSERVER_MAIN.get()
if _path and os.path.isfile(_path):
    process.current_process()._inheriting = True  # type: ignore[attr-defined]
    try:
        spawn.import_main_path(_path)
    except BaseException:  # noqa: BLE001 - a script that cannot be imported here: workers will try
        pass
    finally:
        del process.current_process()._inheriting  # type: ignore[attr-defined]
