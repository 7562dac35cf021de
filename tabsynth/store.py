"""The training store: private rows in compact encoded form, addressable by row index.

DP-SGD draws each step's batch by Poisson sampling over row indices, so the store must give rows by
index. Rows stay compact (a code per categorical, an integer per binary code, float32 numbers; the
one-hot expansion exists only per batch). A table read from a file goes to a scratch file that is
read with positional reads, never memory-mapped: a mapping would count every page it touches (and
the kernel maps whole large folios around each one) towards resident memory, so a few hundred random
batches would pull most of the file into it. The file is deleted when the store closes. An in-memory
DataFrame stays in memory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from tabsynth.encoding import Encoder
from tabsynth.io import BATCH_ROWS, TableSource


class CompactStore:
    """Compact rows by index; use as a context manager so a scratch file is always removed."""

    def __init__(self, rows: np.ndarray | None = None, path: Path | None = None, n_rows: int = 0,
                 n_fields: int = 0) -> None:
        self._rows = rows
        self._path = path
        self.n_fields = rows.shape[1] if rows is not None else n_fields
        self._n_rows = len(rows) if rows is not None else n_rows
        self._row_bytes = 4 * self.n_fields
        self._file = open(path, "rb", buffering=0) if path is not None else None  # noqa: SIM115 - closed in close()

    @classmethod
    def build(cls, encoder: Encoder, source: TableSource, *, redact: bool = True,
              scratch_dir: str | os.PathLike | None = None,
              on_rows: Callable[[int], None] | None = None,
              row_filter: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> "CompactStore":
        """Encode ``source`` batch by batch (in memory for a DataFrame, else into a scratch file).

        ``row_filter``, a per-row selection, is applied to each batch before it is encoded.
        """
        def filtered() -> Iterator[pd.DataFrame]:
            for batch in source.batches(BATCH_ROWS):
                yield batch if row_filter is None else row_filter(batch)

        if source.in_memory:
            return cls(rows=np.concatenate([encoder.encode_compact(batch, redact=redact) for batch in filtered()]))
        directory = Path(tempfile.mkdtemp(prefix="tabsynth-store-", dir=scratch_dir))  # mode 0700
        path = directory / "rows.f32"
        n_rows = 0
        try:
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
                for batch in filtered():
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
        if self._rows is not None:
            return self._rows[index]
        size = self._row_bytes
        data = b"".join([self._read_bytes(i * size, size) for i in np.asarray(index, dtype=np.int64).tolist()])
        return np.frombuffer(data, dtype=np.float32).reshape(-1, self.n_fields).copy()

    def chunks(self, rows: int = BATCH_ROWS) -> Iterator[np.ndarray]:
        """All rows in order, ``rows`` at a time."""
        for start in range(0, self._n_rows, rows):
            if self._rows is not None:
                yield self._rows[start:start + rows]
            else:
                count = min(rows, self._n_rows - start)
                data = self._read_bytes(start * self._row_bytes, count * self._row_bytes)
                yield np.frombuffer(data, dtype=np.float32).reshape(count, self.n_fields).copy()

    def _read_bytes(self, offset: int, size: int) -> bytes:
        if hasattr(os, "pread"):
            data = os.pread(self._file.fileno(), size, offset)
        else:  # pragma: no cover - Windows
            self._file.seek(offset)
            data = self._file.read(size)
        if len(data) != size:
            raise OSError(f"scratch store {self._path} is truncated")
        return data

    def close(self) -> None:
        """Delete the scratch file, if any."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._path is not None:
            shutil.rmtree(self._path.parent, ignore_errors=True)
            self._path = None

    def __enter__(self) -> "CompactStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["CompactStore"]
