"""A full disk under the offline store, for the failure drill in ``tests/test_drills.py``.

Test-only: a sluice process gets it by having this folder on ``PYTHONPATH`` (Python imports
``sitecustomize`` at start-up). While the file named by ``SLUICE_TEST_DISK_FULL`` exists, every file that a
local pyarrow file system (the one ``offline_store.storage.Location`` writes through) opens for writing
fails the way a full disk fails: its first 4 KiB are written, then ``OSError(ENOSPC)``. Reads, listings,
renames and deletes go on, as they do on a full disk. Loop mounts, the usual way to fill a disk in a test,
need privileges these machines do not give.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

_TRIGGER = os.environ.get("SLUICE_TEST_DISK_FULL")

if _TRIGGER:
    import pyarrow as pa
    import pyarrow.fs as pafs

    _LocalFileSystem = pafs.LocalFileSystem
    _ROOM_BYTES = 4096

    class _FillingFile:
        """A file that takes ``_ROOM_BYTES`` and then fails each write with ENOSPC."""

        def __init__(self, path: str) -> None:
            self._file = Path(path).open("wb")  # noqa: SIM115 -- pyarrow closes it through close()
            self._room = _ROOM_BYTES
            self.closed = False

        def write(self, data: Any) -> int:
            chunk = memoryview(data).cast("B")
            if len(chunk) > self._room:
                self._file.write(chunk[: self._room])
                self._room = 0
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self._room -= len(chunk)
            return self._file.write(chunk)

        def flush(self) -> None:
            self._file.flush()

        def close(self) -> None:
            self._file.close()
            self.closed = True

        def writable(self) -> bool:
            return True

        def readable(self) -> bool:
            return False

        def seekable(self) -> bool:
            return False

        def tell(self) -> int:
            return self._file.tell()

    class _DiskFull(pafs.FileSystemHandler):
        """Delegates to a local file system, and fills up while the trigger file exists."""

        def __init__(self, inner: pafs.FileSystem) -> None:
            self.inner = inner

        def _full(self) -> bool:
            return Path(str(_TRIGGER)).exists()

        def get_type_name(self) -> str:
            return "disk-full-drill"

        def normalize_path(self, path: str) -> str:
            return str(self.inner.normalize_path(path))

        def get_file_info(self, paths: list[str]) -> Any:
            return self.inner.get_file_info(paths)

        def get_file_info_selector(self, selector: Any) -> Any:
            return self.inner.get_file_info(selector)

        def create_dir(self, path: str, recursive: bool) -> None:
            self.inner.create_dir(path, recursive=recursive)

        def delete_dir(self, path: str) -> None:
            self.inner.delete_dir(path)

        def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
            self.inner.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

        def delete_root_dir_contents(self) -> None:
            raise OSError(errno.EPERM, "the drill's file system never empties its root")

        def delete_file(self, path: str) -> None:
            self.inner.delete_file(path)

        def move(self, src: str, dest: str) -> None:
            self.inner.move(src, dest)

        def copy_file(self, src: str, dest: str) -> None:
            if self._full():
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.inner.copy_file(src, dest)

        def open_input_stream(self, path: str) -> Any:
            return self.inner.open_input_stream(path)

        def open_input_file(self, path: str) -> Any:
            return self.inner.open_input_file(path)

        def open_output_stream(self, path: str, metadata: Any) -> Any:
            if self._full():
                return pa.PythonFile(_FillingFile(path), mode="w")
            return self.inner.open_output_stream(path, metadata=metadata)

        def open_append_stream(self, path: str, metadata: Any) -> Any:
            if self._full():
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.inner.open_append_stream(path, metadata=metadata)

    class _LocalType(type):
        # pyarrow's own code asks isinstance(fs, LocalFileSystem): answer as the real class does.
        def __instancecheck__(cls, instance: Any) -> bool:
            return isinstance(instance, _LocalFileSystem)

        def __subclasscheck__(cls, subclass: Any) -> bool:
            return issubclass(subclass, _LocalFileSystem)

    class _FillingLocalFileSystem(metaclass=_LocalType):
        def __new__(cls, *args: Any, **kwargs: Any) -> Any:
            return pafs.PyFileSystem(_DiskFull(_LocalFileSystem(*args, **kwargs)))

    pafs.LocalFileSystem = _FillingLocalFileSystem  # type: ignore[misc,assignment]
