"""The training store: private rows in compact encoded form, addressable by row index.

DP-SGD draws each step's batch by Poisson sampling over row indices, so the store must give rows by
index. Rows stay compact (a code per categorical, an integer per binary code, float32 numbers; the
one-hot expansion exists only per batch). A table read from a file goes to a scratch file that is
memory-mapped for reads and unmapped after each one, so resident memory does not grow with the
table; the file is deleted when the store closes. An in-memory DataFrame stays in memory.
"""

from __future__ import annotations

import mmap
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from tabsynth.encoding import Encoder
from tabsynth.io import BATCH_ROWS, TableSource


class CompactStore:
    """Compact rows by index; use as a context manager so a scratch file is always removed."""

    def __init__(self, rows: np.ndarray | None = None, path: Path | None = None, n_rows: int = 0,
                 n_fields: int = 0) -> None:
        self._rows = rows
        self._path = path
        self._map: mmap.mmap | None = None
        self.n_fields = rows.shape[1] if rows is not None else n_fields
        self._n_rows = len(rows) if rows is not None else n_rows
        if path is not None and n_rows:
            with open(path, "rb") as handle:
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            if hasattr(self._map, "madvise"):
                self._map.madvise(mmap.MADV_RANDOM)

    @classmethod
    def build(cls, encoder: Encoder, source: TableSource, *, redact: bool = True,
              scratch_dir: str | os.PathLike | None = None,
              on_rows: Callable[[int], None] | None = None) -> "CompactStore":
        """Encode ``source`` batch by batch (in memory for a DataFrame, else into a scratch file)."""
        if source.in_memory:
            batches = [encoder.encode_compact(batch, redact=redact) for batch in source.batches()]
            return cls(rows=np.concatenate(batches))
        directory = Path(tempfile.mkdtemp(prefix="tabsynth-store-", dir=scratch_dir))  # mode 0700
        path = directory / "rows.f32"
        n_rows = 0
        try:
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
                for batch in source.batches(BATCH_ROWS):
                    compact = encoder.encode_compact(batch, redact=redact)
                    handle.write(np.ascontiguousarray(compact, dtype=np.float32).tobytes())
                    n_rows += len(compact)
                    if on_rows is not None:
                        on_rows(len(compact))
            return cls(path=path, n_rows=n_rows, n_fields=encoder.compact_dim)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise

    def __len__(self) -> int:
        return self._n_rows

    def take(self, index: np.ndarray) -> np.ndarray:
        """The rows at ``index`` (a copy, in the order given)."""
        return self._read(index)

    def chunks(self, rows: int = BATCH_ROWS) -> Iterator[np.ndarray]:
        """All rows in order, ``rows`` at a time."""
        for start in range(0, self._n_rows, rows):
            yield self._read(slice(start, start + rows))

    def _read(self, select: np.ndarray | slice) -> np.ndarray:
        if self._rows is not None:
            return self._rows[select].copy() if isinstance(select, slice) else self._rows[select]
        if self._map is None:
            return np.zeros((0, self.n_fields), dtype=np.float32)
        view = np.frombuffer(self._map, dtype=np.float32).reshape(self._n_rows, self.n_fields)
        selected = view[select].copy() if isinstance(select, slice) else view[select]
        del view
        if hasattr(self._map, "madvise"):
            self._map.madvise(mmap.MADV_DONTNEED)  # drop the touched pages from this process's memory
        return selected

    def close(self) -> None:
        """Unmap and delete the scratch file, if any."""
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._path is not None:
            shutil.rmtree(self._path.parent, ignore_errors=True)
            self._path = None

    def __enter__(self) -> "CompactStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["CompactStore"]
