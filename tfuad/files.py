"""Files written atomically and small JSON records.

Every output of tfuad goes through :func:`atomic_path`, so an interrupted run
never leaves a half-written file under the final name.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "record.json"
    >>> _ = write_json({"a": 1}, p)
    >>> read_json(p)
    {'a': 1}
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from tfuad.errors import ConfigError, DataError

__all__ = ["atomic_path", "write_text", "write_json", "read_json", "check_name", "ensure_writable_dir"]


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; move it into place only on success.

    The temporary name keeps the file's extension so writers that look at it
    (``.nii.gz`` → gzip) behave as for the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_text(text: str, path) -> Path:
    """Write ``text`` (UTF-8) to ``path``, atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return Path(path)


def write_json(obj, path) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return write_text(json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n", path)


def read_json(path):
    """Read a JSON file; a missing or broken file is a :class:`ConfigError` naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None


def check_name(name, what: str = "name", source=None) -> str:
    """``name`` if it can name a file or folder inside an output folder.

    Ids from manifests, records or file names become file names only through
    this check: not empty, not ``.`` or ``..``, no path separator (so no
    absolute path), no NUL, no leading dot (hidden names are tfuad's
    temporaries).

    Args:
        name: The candidate.
        what: What it is, for the message (``"subject id"``, ``"'weights'"``).
        source: The file it came from (a manifest, ``state.json``, an input), named in the message.

    Raises:
        DataError: naming ``source``, ``what`` and the reason.

    Example:
        >>> check_name("sub-01")
        'sub-01'
        >>> check_name("a/b", "id")
        Traceback (most recent call last):
        ...
        tfuad.errors.DataError: id 'a/b' cannot name an output folder or file (it holds a path separator)
    """
    text = name if isinstance(name, str) else ""
    if not text.strip():
        reason = "it is empty"
    elif text in (".", ".."):
        reason = f"{text!r} is not a name"
    elif "/" in text or "\\" in text or os.sep in text or (os.altsep and os.altsep in text):
        reason = "it holds a path separator"
    elif "\0" in text:
        reason = "it holds a NUL character"
    elif text.startswith("."):
        reason = "it starts with a dot"
    else:
        return text
    raise DataError(source, f"{what} {name!r} cannot name an output folder or file ({reason})")


def ensure_writable_dir(path) -> Path:
    """Create ``path`` (and parents) and check that files can be written in it, before any work.

    Raises:
        ConfigError: the path is a file, or cannot be created or written (one line naming it).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".tfuad-write-test.", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise ConfigError(f"{path}: cannot write here ({err.strerror or err})") from None
    return path


def _jsonable(obj):
    import numpy as np

    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
