"""LMDB checkpoints: named numpy arrays and a JSON metadata record, written in one
transaction by one writer thread.

Layout: database ``meta`` holds ``schema`` (``SCHEMA``) and ``meta`` (JSON); database
``arrays`` holds each array as ``name`` -> a 64-byte header (dtype descr, shape) + raw bytes.
A folder holding another program's LMDB, or a newer schema, is refused and never written.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import lmdb
import numpy as np

from bae_core.errors import SchemaMismatch, StoreError

SCHEMA = b"bae-state/1"


def _pack(a: np.ndarray) -> bytes:
    head = json.dumps({"dtype": np.lib.format.dtype_to_descr(a.dtype),
                       "shape": list(a.shape)}).encode()
    return len(head).to_bytes(4, "little") + head + np.ascontiguousarray(a).tobytes()


def _unpack(buf: bytes) -> np.ndarray:
    n = int.from_bytes(buf[:4], "little")
    head = json.loads(buf[4:4 + n])
    dt = np.lib.format.descr_to_dtype(_tuples(head["dtype"]))
    return np.frombuffer(buf, dt, offset=4 + n).reshape(head["shape"]).copy()


def _tuples(descr):
    if isinstance(descr, list):
        return [tuple(_tuples(x) for x in d) if isinstance(d, list) else d for d in descr]
    return descr


_META = struct.Struct("<I4x8x8xI")  # at page offset 16: magic, (version, address, mapsize), page size
_LAST = struct.Struct("<QQ")  # at page offset 136: last page number, transaction id
_MAGIC = 0xBEEFC0DE


def _check_not_truncated(mdb: Path) -> None:
    """LMDB maps its file: a page past the end of a truncated file is a SIGBUS, not an
    error. Read the two meta pages first and refuse a file shorter than they say."""
    if not mdb.exists():
        return
    size = mdb.stat().st_size
    with open(mdb, "rb") as f:
        head = f.read(4096)
        if len(head) < 152:
            raise StoreError(f"cannot open LMDB {mdb}: truncated ({size} bytes); move the "
                             "folder away and restart (state is rebuilt from the journal "
                             "and new events)")
        magic, psize = _META.unpack_from(head, 16)
        if magic != _MAGIC or psize < 512 or psize & (psize - 1):
            raise StoreError(f"cannot open LMDB {mdb}: not an LMDB file; move it away and "
                             "restart")
        f.seek(psize)
        second = f.read(152)
    metas = [_LAST.unpack_from(head, 136)]
    if len(second) == 152 and _META.unpack_from(second, 16)[0] == _MAGIC:
        metas.append(_LAST.unpack_from(second, 136))
    last_pg = max(metas, key=lambda m: m[1])[0]
    if size < (last_pg + 1) * psize:
        raise StoreError(f"cannot open LMDB {mdb}: truncated to {size} bytes, its last page "
                         f"ends at {(last_pg + 1) * psize}; move the folder away and restart "
                         "(state is rebuilt from the journal and new events)")


class Store:
    """One LMDB environment in ``path``. Not thread-safe: one writer thread owns it."""

    def __init__(self, path: str | os.PathLike, map_size_mb: int = 1024,
                 max_map_size_mb: int = 0):
        self.path = Path(path)
        self.max_map_size = max_map_size_mb << 20
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create data folder {self.path}: {e.strerror}; choose "
                             "a writable --data-dir") from e
        foreign = [p.name for p in self.path.iterdir()
                   if p.name not in ("data.mdb", "lock.mdb")]
        if foreign and not (self.path / "data.mdb").exists():
            raise SchemaMismatch(f"{self.path} holds files of another program "
                                 f"({', '.join(sorted(foreign)[:3])}); point --data-dir at an "
                                 "empty or BAE folder")
        _check_not_truncated(self.path / "data.mdb")
        self._open(map_size_mb << 20)
        self._check_schema()

    def _open(self, map_size: int) -> None:
        try:
            # writemap stays off: with it a full disk is a SIGBUS in a page fault instead
            # of an error from write() that the daemon can report and retry.
            self.env = lmdb.open(str(self.path), map_size=map_size, max_dbs=4,
                                 subdir=True, writemap=False, metasync=False)
        except lmdb.Error as e:
            raise StoreError(f"cannot open LMDB in {self.path}: {e}; if the file is corrupt, "
                             "move it away and restart (state is rebuilt from events)") from e
        self._meta = self.env.open_db(b"meta")
        self._arrays = self.env.open_db(b"arrays")

    def _check_schema(self) -> None:
        with self.env.begin(db=self._meta) as txn:
            schema = txn.get(b"schema")
        if schema is None:
            with self.env.begin() as txn:
                names = [k for k, _ in txn.cursor()]
            if [n for n in names if n not in (b"meta", b"arrays")]:
                raise SchemaMismatch(f"{self.path} is an LMDB database of another program; "
                                     "point --data-dir at an empty or BAE folder")
            return
        if schema != SCHEMA:
            raise SchemaMismatch(f"{self.path} was written as {schema.decode(errors='replace')}"
                                 f", this BAE reads {SCHEMA.decode()}: run the BAE version "
                                 "that wrote it, or move the folder away")

    def save(self, meta: dict, arrays: dict[str, np.ndarray], replace: bool = True) -> int:
        """Write one checkpoint in one transaction: ``arrays`` replace the stored arrays
        (``replace``) or update them (keys not given stay). Returns bytes written. Grows
        the map when full, up to ``max_map_size_mb``."""
        blobs = {k.encode(): _pack(v) for k, v in arrays.items()}
        size = sum(map(len, blobs.values()))
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    txn.put(b"schema", SCHEMA, db=self._meta)
                    if replace:
                        txn.drop(self._arrays, delete=False)
                    for k, v in blobs.items():
                        txn.put(k, v, db=self._arrays)
                    txn.put(b"meta", json.dumps(meta).encode(), db=self._meta)
                break
            except lmdb.MapFullError:
                self._grow(size)
            except lmdb.Error:
                # a failed write (a full disk, say) leaves the environment unusable until
                # it is opened again; the caller retries the checkpoint later
                map_size = self.env.info()["map_size"]
                self.env.close()
                self._open(map_size)
                raise
        self.env.sync(True)
        return size

    def _grow(self, size: int) -> None:
        now = self.env.info()["map_size"]
        grown = max(now * 2, now + size * 2)
        if self.max_map_size and grown > self.max_map_size:
            if now >= self.max_map_size:
                raise StoreError(f"LMDB map in {self.path} is full at {now >> 20} MiB "
                                 "(state.max_map_size_mb); raise the limit or free disk "
                                 "space") from None
            grown = self.max_map_size
        self.env.set_mapsize(grown)

    def load(self) -> tuple[dict, dict[str, np.ndarray]] | None:
        """The last checkpoint, or None for a new folder."""
        with self.env.begin() as txn:
            meta = txn.get(b"meta", db=self._meta)
            if meta is None:
                return None
            arrays = {k.decode(): _unpack(bytes(v)) for k, v in txn.cursor(db=self._arrays)}
        return json.loads(meta), arrays

    def close(self) -> None:
        self.env.close()
