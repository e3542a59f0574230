"""Checkpoints: copy the engine's state a chunk at a time on the event loop (ingest paused,
everything else running), write it in one LMDB transaction from the writer thread, then let
the journal drop what the checkpoint now covers. Restore does the reverse at start."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .store import Store

log = logging.getLogger("bae.checkpoint")


class Checkpointer:
    def __init__(self, daemon, store: Store):
        self.d, self.store = daemon, store
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="bae-lmdb")
        self.running = False
        self.last_ok = time.monotonic()
        self.last_duration_s = 0.0
        self.error: str | None = None
        self.full_next = True  # first checkpoint after start rewrites every chunk
        self.journal_seq = 0  # journal position the last good checkpoint covers

    def restore(self) -> dict | None:
        got = self.store.load()
        if got is None:
            return None
        meta, arrays = got
        self.d.engine.restore(meta["engine"], arrays)
        self.journal_seq = meta.get("journal_seq", 0)
        self.full_next = False
        return meta

    async def run(self, reason: str) -> bool:
        """Take one checkpoint unless one is already running."""
        if self.running:
            return False
        self.running = True
        d = self.d
        t0 = time.monotonic()
        try:
            d.gate.clear()  # ingest waits; HTTP, ticks and heartbeats go on
            try:
                d.commit()
                journal_seq = d.journal.next_seq if d.journal is not None else 0
                arrays, meta = await self._capture(self.full_next)
            finally:
                d.gate.set()
            meta.update(journal_seq=journal_seq, **d.checkpoint_meta())
            loop = asyncio.get_running_loop()
            ok = await loop.run_in_executor(self.writer, self._write, meta, arrays,
                                            self.full_next)
            if ok:
                self.full_next = False
                self.journal_seq = journal_seq
                if d.journal is not None:
                    d.journal.retain(journal_seq, time.time_ns() // 1000)
                self.last_duration_s = time.monotonic() - t0
                log.info("checkpoint", extra={"reason": reason, "seconds":
                                              round(self.last_duration_s, 3),
                                              "journal_seq": journal_seq})
            else:
                self.full_next = True  # dirty flags were cleared: rewrite all next time
            return ok
        finally:
            self.running = False

    async def _capture(self, full: bool):
        arrays: dict[str, np.ndarray] = {}
        meta: dict = {}
        for key, part in self.d.engine.state_parts(full=full):
            if key == "meta":
                meta["engine"] = part
                continue
            arrays[key] = part
            await asyncio.sleep(0)  # parts are at most a chunk of rows: let the loop run
        return arrays, meta

    def _write(self, meta: dict, arrays: dict[str, np.ndarray], full: bool) -> bool:
        """Runs on the writer thread."""
        try:
            self.store.save(meta, arrays, replace=full)
        except Exception as e:  # a failed checkpoint must never take the daemon down
            self.d.counters.checkpoint_failures += 1
            if self.error is None:
                log.error("checkpoint failed; state stays in memory, will retry",
                          extra={"error": str(e)})
            self.error = str(e)
            return False
        self.d.counters.checkpoints += 1
        self.last_ok = time.monotonic()
        if self.error is not None:
            log.warning("checkpoints succeed again", extra={"after": self.error})
        self.error = None
        return True

    def age_s(self) -> float:
        return time.monotonic() - self.last_ok

    def close(self) -> None:
        self.writer.shutdown(wait=True)
