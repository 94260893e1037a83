"""The file a RaggedWriter writes through (h5py's file-object driver): it keeps a full
disk from crashing HDF5."""

from __future__ import annotations

import os
from pathlib import Path


class GuardedFile:
    """The writer's temporary file as HDF5 sees it, through h5py's file-object driver.

    A failed write (full disk, file-size limit) is recorded instead of raised into HDF5:
    after failed writes HDF5 cannot close its objects, h5py prints an error for each
    one, and HDF5 crashes at exit. Writes from the failure on are kept in memory so that
    HDF5 reads back what it wrote and closes cleanly; the writer then raises the error.
    """

    def __init__(self, path: Path, target: Path):
        self.target = target
        self.error: OSError | None = None
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
        except OSError as err:
            # The temporary name means nothing to the user; the output does.
            raise OSError(err.errno, err.strerror, str(target)) from err
        self._pos = 0
        self._size = 0
        self._unwritten: list[tuple[int, bytes]] = []

    def raise_error(self) -> None:
        if self.error is not None:
            raise OSError(self.error.errno, self.error.strerror, str(self.target)) from self.error

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_CUR:
            offset += self._pos
        elif whence == os.SEEK_END:
            offset += self._size
        self._pos = offset
        return offset

    def tell(self) -> int:
        return self._pos

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        done = 0
        if self.error is None:
            try:
                while done < len(view):
                    done += os.pwrite(self._fd, view[done:], self._pos + done)
            except OSError as err:
                self.error = err
        if done < len(view):
            self._unwritten.append((self._pos + done, bytes(view[done:])))
        self._pos += len(view)
        self._size = max(self._size, self._pos)
        return len(view)

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        data = os.pread(self._fd, len(view), self._pos)
        view[: len(data)] = data
        view[len(data):] = bytes(len(view) - len(data))
        for start, chunk in self._unwritten:
            lo, hi = max(start, self._pos), min(start + len(chunk), self._pos + len(view))
            if lo < hi:
                view[lo - self._pos : hi - self._pos] = chunk[lo - start : hi - start]
        self._pos += len(view)
        return len(view)

    def truncate(self, size: int) -> int:
        if self.error is None:
            try:
                os.ftruncate(self._fd, size)
            except OSError as err:
                self.error = err
        self._size = size
        return size

    def flush(self) -> None:
        """Nothing to do: writes go straight to the file descriptor."""

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            os.close(self._fd)
        except OSError as err:
            # Network file systems may report a failed write only now.
            self.error = self.error or err
        self._fd = -1
