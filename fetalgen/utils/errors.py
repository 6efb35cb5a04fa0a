"""Which failures are a user's to fix: reported in one line, the traceback only when asked for."""

from __future__ import annotations

import os

# Bad input, a bad setting, a missing file or extra: every fetalgen message of these names the file or setting.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, ImportError)


def traceback_wanted() -> bool:
    """Whether the user asked for full tracebacks (Hydra's own switch, ``HYDRA_FULL_ERROR=1``)."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"
