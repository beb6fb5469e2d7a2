"""curation: the library half of the pipeline (plain Python and NumPy, no Beam)."""

import os as _os
import sys as _sys
import tempfile as _tempfile

__version__ = "0.1.0"


def _numba_cache_dir() -> str:
    """Where our Numba functions (cache=True) keep their machine code: a user cache
    directory, never the installed package. Numba's default, __pycache__ beside the
    source, leaves files in site-packages that `pip uninstall` does not remove; the
    leftover `curation` folder then shadows an editable install as a namespace
    package (issue 12)."""
    base = _os.environ.get("XDG_CACHE_HOME") or _os.path.join(_os.path.expanduser("~"), ".cache")
    user = _os.getuid() if hasattr(_os, "getuid") else 0
    for path in (_os.path.join(base, "curation", "numba"),
                 _os.path.join(_tempfile.gettempdir(), f"curation-numba-{user}")):
        try:
            _os.makedirs(path, exist_ok=True)
            if _os.access(path, _os.W_OK | _os.X_OK):
                return path
        except OSError:
            pass
    return ""


# Set before any of our modules decorates a function: Numba picks the cache location
# at decoration time. A user's own NUMBA_CACHE_DIR wins.
if not _os.environ.get("NUMBA_CACHE_DIR"):
    _dir = _numba_cache_dir()
    if _dir:
        _os.environ["NUMBA_CACHE_DIR"] = _dir
        if "numba.core.config" in _sys.modules:     # numba imported first: make it re-read
            _sys.modules["numba.core.config"].reload_config()
    del _dir
