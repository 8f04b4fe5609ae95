"""writerlock: one writer per local dataset folder, by an ``flock`` on a lock file in it.

The system releases the lock when the process dies, even by SIGKILL, so a crashed run leaves
no stale lock. A writer that found no dataset folder and leaves nothing in it but the lock (a
first ingest that failed) removes the lock file and the folders it made: no empty dataset is
left behind. It removes the file while it holds the lock, so a writer that opened the file
just before and gets the lock just after sees that its file is gone, and opens it again.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from .errors import WarehouseError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, one writer per dataset is up to the user
    fcntl = None


@contextlib.contextmanager
def hold(root: str, name: str, url: str) -> Iterator[None]:
    """Hold the lock file ``root/name`` (``url``: the dataset as messages name it), or fail
    at once if another process holds it."""
    made = []  # the folders this writer makes, outermost first
    d = root
    while d and d != "/" and not os.path.isdir(d):
        made.insert(0, d)
        d = os.path.dirname(d)
    os.makedirs(root, exist_ok=True)
    path = f"{root}/{name}"
    while True:
        f = open(path, "a")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise WarehouseError(
                f"{url}: another run is writing this dataset (it holds {name}); run again when it has ended"
            ) from None
        try:  # the lock of a file another writer removed while this one opened it is no lock
            if os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        f.close()
        os.makedirs(root, exist_ok=True)  # that writer may have removed the folder too
    try:
        yield
    finally:
        try:
            if made and os.listdir(root) == [name]:
                os.unlink(path)  # while holding it (see the module's text)
                for d in reversed(made):
                    with contextlib.suppress(OSError):
                        os.rmdir(d)
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            f.close()
