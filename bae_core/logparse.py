"""Access logs -> columnar batches of REQUEST records, for ``bae replay``.

Three formats:

``nasa``
    The tab-separated NASA HTTP trace (header ``host logname time method url response bytes
    referer useragent``; ``time`` in Unix seconds; ``bytes`` may be ``-`` or empty). A first
    line without that header is read as data in the column order above.
``clf``
    Common and Combined Log Format as nginx and Apache write them, HAProxy's default
    ``option httplog`` lines (latency = Tt/Ta, the 5th timer) and HAProxy's ``option httplog
    clf`` lines (latency = the 5th timer after the server name, ``%ms`` added to the
    timestamp). The flavour is detected per line, and a syslog prefix
    (``Feb  6 12:14:14 lb haproxy[14389]: ``) is skipped. Dates without a UTC offset
    (HAProxy's ``[06/Feb/2009:12:14:14.655]``) are read as UTC.
``csv``
    A header line naming ``timestamp,user,resource`` (required) and ``service,latency_ms,
    bytes,status`` (optional), in any order; other columns are ignored. ``timestamp`` is Unix
    seconds (a fraction is allowed; a plain run of digits is always Unix seconds) or ISO 8601
    (no offset = UTC). One record per line: quoted fields may hold commas, not newlines.

Every record gets ``user = stable_id(host)``, ``resource = stable_id(path)`` (the request
target without query string or fragment) and ``service = service_id(name)``, where the
service name is the first path segment, lower-cased (``/shuttle/missions/x.html`` ->
``shuttle``; a file at the root such as ``/`` or ``/index.html`` -> ``root``), or the csv
``service`` column as written. ``latency_ms`` is 0 where the log has none; ``status`` is 0
where a csv has no status column; ``geo`` and ``device`` are 0. Timestamps are kept as
logged (``bae replay`` rebases them).

A line that cannot be used is counted in ``Stats.skipped`` under one of ``REASONS`` and
skipped, never raised. Bytes that are not UTF-8 are decoded with U+FFFD and counted in
``Stats.undecodable`` (the line is still parsed). ``errors.LogFormatError`` is raised only
when the input as a whole is unusable: the file cannot be opened or read, it holds no line,
the format is unknown, or a csv/nasa header lacks a required column. As ``iter_batches`` is a
generator, that happens on the first ``next()``.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import math
import os
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from itertools import chain
from typing import Callable, Iterable, Iterator

import numpy as np

from . import errors, wire

FORMATS = ("nasa", "clf", "csv")
_ALIASES = {"combined": "clf", "common": "clf", "haproxy": "clf", "tsv": "nasa"}

# Reasons a line is skipped (keys of Stats.skipped).
REASONS = (
    "blank",          # empty or whitespace-only line
    "unparseable",    # does not have the shape of the format, or is over MAX_LINE long
    "bad_timestamp",  # date/time missing, malformed or outside years 1..9999
    "bad_status",     # status not an integer in 100..999 (HAProxy logs -1 for aborts)
    "bad_bytes",      # byte count neither '-', empty, nor an integer in 0..2**63-1
    "bad_latency",    # csv latency_ms not a finite number >= 0
    "bad_request",    # no request target path (TLS noise on port 80, '<BADREQ>', CONNECT)
    "missing_field",  # empty user or resource
    "bad_encoding",   # a str line holding lone surrogates (cannot be UTF-8 encoded)
)

MAX_LINE = 65536  # characters; longer lines are no access-log lines (nginx/Apache cap ~8 KiB)
CSV_REQUIRED = ("timestamp", "user", "resource")
CSV_OPTIONAL = ("service", "latency_ms", "bytes", "status")
NASA_COLUMNS = ("host", "logname", "time", "method", "url", "response", "bytes", "referer",
                "useragent")

_MAX_U64 = 0xFFFFFFFFFFFFFFFF
_MAX_U32 = 0xFFFFFFFF
_MAX_BYTES = (1 << 63) - 1
_MIN_S = -62135596800  # 0001-01-01T00:00:00Z
_MAX_S = 253402300799  # 9999-12-31T23:59:59Z
_F32_MAX = float(np.finfo(np.float32).max)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_EPOCH_ORD = date(1970, 1, 1).toordinal()
_MONTHS = {m: i + 1 for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))}


# ----------------------------------------------------------------------------- ids & names

def stable_id(s: str) -> int:
    """The u64 id of a user or resource name: the little-endian blake2b-64 of its UTF-8 bytes,
    never ``wire.NO_ID`` (0xFFFFFFFFFFFFFFFF becomes 0xFFFFFFFFFFFFFFFE)."""
    v = int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(), "little")
    return _MAX_U64 - 1 if v == _MAX_U64 else v


def service_id(name: str) -> int:
    """The u32 id of a service name: the low 32 bits of ``stable_id``, never ``wire.ALL``."""
    v = stable_id(name) & _MAX_U32
    return _MAX_U32 - 1 if v == _MAX_U32 else v


def resource_path(target: str) -> str | None:
    """The path of a request target, without query string or fragment; an absolute URI
    (``http://host/a?b``) gives its path. None when the target has no path (``*``,
    ``host:443``, garbage)."""
    path = target.partition("?")[0]
    if "#" in path:
        path = path.partition("#")[0]
    if path[:1] == "/":
        return path
    i = path.find("://")
    if i > 0 and path[:i].isalpha():
        j = path.find("/", i + 3)
        return path[j:] if j >= 0 else "/"
    return None


def service_name(path: str) -> str:
    """The service a path belongs to: its first segment, lower-cased, when a further ``/``
    follows it; ``root`` for ``/``, a file at the root (``/index.html``) or a path of one
    segment."""
    p = path.lstrip("/")
    i = p.find("/")
    return p[:i].lower() if i > 0 else "root"


# ----------------------------------------------------------------------------- results

@dataclass
class Stats:
    """Running counts. ``lines`` counts data lines read (a header line is not one), and
    ``lines == parsed + skipped_total`` holds whenever a batch is yielded."""

    lines: int = 0
    parsed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    undecodable: int = 0  # lines with bytes that are not UTF-8 (read with U+FFFD)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def copy(self) -> Stats:
        return Stats(self.lines, self.parsed, dict(self.skipped), self.undecodable)

    def summary(self) -> str:
        why = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items()))
        s = f"{self.lines} lines, {self.parsed} parsed, {self.skipped_total} skipped"
        if why:
            s += f" ({why})"
        if self.undecodable:
            s += f", {self.undecodable} not UTF-8"
        return s


@dataclass(frozen=True)
class Batch:
    """``records``: wire.REQUEST, in log order. ``names``: wire.NAME records (users, then
    resources, then services) for the ids first seen in this batch. ``stats``: a snapshot of
    the running counts after this batch; the last batch of a run carries the final counts and
    may hold no records."""

    records: np.ndarray
    names: np.ndarray
    stats: Stats

    def __len__(self) -> int:
        return len(self.records)


# ----------------------------------------------------------------------------- field parsing

def _status(s: str) -> int | None:
    try:
        v = int(s)
    except ValueError:
        return None
    return v if 100 <= v <= 999 else None


def _nbytes(s: str) -> int | None:
    if not s or s == "-":
        return 0
    try:
        v = int(s)
    except ValueError:
        return None
    return v if 0 <= v <= _MAX_BYTES else None


_DECIMAL = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?")


def _unix_us(s: str) -> int | None:
    """Unix seconds (int, decimal fraction, or float syntax) -> microseconds, or None."""
    if len(s) > 64:
        return None
    try:
        sec = int(s)
    except ValueError:
        m = _DECIMAL.fullmatch(s.strip())
        if m and (m.group(2) or m.group(3)):
            us = int(m.group(2) or "0") * 1_000_000 + int((m.group(3) + "000000")[:6])
            us = -us if m.group(1) == "-" else us
        else:
            try:
                f = float(s)
            except ValueError:
                return None
            if not math.isfinite(f) or not _MIN_S <= f <= _MAX_S:
                return None
            us = round(f * 1e6)
        return us if _MIN_S * 1_000_000 <= us <= _MAX_S * 1_000_000 else None
    return sec * 1_000_000 if _MIN_S <= sec <= _MAX_S else None


def _iso_us(s: str) -> int | None:
    try:
        dt = datetime.fromisoformat(s)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        d = dt - _EPOCH
    except (ValueError, OverflowError, TypeError):
        return None
    return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds


def _csv_time_us(s: str) -> int | None:
    s = s.strip()
    if not s:
        return None
    us = _unix_us(s)
    return us if us is not None else _iso_us(s)


_CLF_DATE = re.compile(
    r"\s*(\d{1,2})/([A-Za-z]{3})/(\d{4}):(\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?"
    r"(?:\s*([+-])(\d\d):?(\d\d))?\s*", re.ASCII)


def _clf_time_us(s: str) -> tuple[int, bool] | None:
    """``10/Oct/2000:13:55:36 -0700`` (HAProxy: ``06/Feb/2009:12:14:14.655``, no offset =
    UTC) -> (microseconds, whether the date had a fraction), or None."""
    m = _CLF_DATE.fullmatch(s)
    if m is None:
        return None
    day, mon, year, hh, mm, ss, frac, sign, oh, om = m.groups()
    month = _MONTHS.get(mon.lower())
    h, mi, sec = int(hh), int(mm), int(ss)
    if month is None or h > 23 or mi > 59 or sec > 60:
        return None
    try:
        days = date(int(year), month, int(day)).toordinal() - _EPOCH_ORD
    except ValueError:
        return None
    secs = days * 86400 + h * 3600 + mi * 60 + sec
    if sign:
        if int(oh) > 23 or int(om) > 59:
            return None
        off = int(oh) * 3600 + int(om) * 60
        secs += off if sign == "-" else -off
    if not _MIN_S <= secs <= _MAX_S:
        return None
    us = secs * 1_000_000
    if frac:
        us += int((frac + "00000")[:6])
    return us, bool(frac)


# ----------------------------------------------------------------------------- line parsers
# Each returns (ts_us, user, path, status, bytes, latency_ms, service-or-None) or a reason.

_CLF = re.compile(
    r'(?<!\S)(\S+) (\S+) (\S+) \[([^\]]{1,48})\] "((?:[^"\\]|\\.)*)" (\S+) (\S+)(.*)')
_HAPROXY = re.compile(
    r"(?<!\S)(\S+):(\d+) \[([^\]]{1,48})\] \S+ \S+ "
    r"(-?\d+)/(-?\d+)/(-?\d+)/(-?\d+)/\+?(-?\d+) (\S+) (\S+) \S+ \S+ \S+ \S+ \S+ "
    r'(?:\{[^}]*\} ){0,2}"([^"]*)', re.ASCII)
_HAPROXY_CLF_TAIL = re.compile(
    r' "[^"]*" "[^"]*" \d+ (\d{1,3}) "?[^"\s]*"? "?[^"\s]*"? "?[^"\s]*"? '
    r"-?\d+ -?\d+ -?\d+ -?\d+ \+?(-?\d+)(?:\s|$)", re.ASCII)


def _request_path(request: str) -> str | None:
    parts = request.split(" ")
    if len(parts) < 2 or not (parts[0].isascii() and parts[0].isalpha()):
        return None
    return resource_path(parts[1])


_CLF_TIME_CACHE: dict[str, tuple[int, bool]] = {}  # date string -> parsed (deterministic)


def _parse_clf_line(line: str):
    _cache = _CLF_TIME_CACHE
    m = _CLF.search(line)
    if m is not None:
        host, _ident, _user, when, request, st, nb, tail = m.groups()
        latency = 0.0
        t = _cache.get(when)
        if t is None:
            t = _clf_time_us(when)
            if t is None:
                return "bad_timestamp"
            if len(_cache) > 4096:
                _cache.clear()
            _cache[when] = t
        ts, had_frac = t
        if tail[:4] == ' "" ':  # maybe HAProxy "option httplog clf"
            h = _HAPROXY_CLF_TAIL.match(tail)
            if h is not None:
                if not had_frac:
                    ts += int(h.group(1)) * 1000
                latency = max(float(h.group(2)), 0.0)
    else:
        m = _HAPROXY.search(line)
        if m is None:
            return "unparseable"
        host, when, tt, st, nb, request = (m.group(1), m.group(3), m.group(8), m.group(9),
                                          m.group(10), m.group(11))
        t = _clf_time_us(when)
        if t is None:
            return "bad_timestamp"
        ts = t[0]
        latency = max(float(tt), 0.0)
    status = _status(st)
    if status is None:
        return "bad_status"
    nbytes = _nbytes(nb)
    if nbytes is None:
        return "bad_bytes"
    path = _request_path(request)
    if path is None:
        return "bad_request"
    if latency > _F32_MAX:
        return "bad_latency"
    return ts, host, path, status, nbytes, latency, None


def _nasa_parser(first: str, label: str) -> tuple[Callable, bool]:
    """The line parser for the NASA trace and whether ``first`` was a header."""
    cols = [c.strip().lower() for c in first.lstrip("\ufeff").split("\t")]
    header = cols[0] == "host"
    if header:
        missing = [c for c in ("host", "time", "url") if c not in cols]
        if missing:
            raise errors.LogFormatError(
                f"{label}: the nasa header lacks column(s) {', '.join(missing)}; the first "
                f"line must name the tab-separated columns {' '.join(NASA_COLUMNS)}")
        ih, it, iu = cols.index("host"), cols.index("time"), cols.index("url")
        ir = cols.index("response") if "response" in cols else -1
        ib = cols.index("bytes") if "bytes" in cols else -1
    else:
        ih, it, iu, ir, ib = 0, 2, 4, 5, 6
    need = max(ih, it, iu, ir, ib) + 1

    def parse(line: str):
        f = line.split("\t")
        if len(f) < need:
            return "unparseable"
        host = f[ih].strip()
        if not host:
            return "missing_field"
        ts = _unix_us(f[it])
        if ts is None:
            return "bad_timestamp"
        status = 0
        if ir >= 0:
            status = _status(f[ir])
            if status is None:
                return "bad_status"
        nbytes = 0
        if ib >= 0:
            nbytes = _nbytes(f[ib].strip())
            if nbytes is None:
                return "bad_bytes"
        path = resource_path(f[iu].strip())
        if path is None:
            return "bad_request"
        return ts, host, path, status, nbytes, 0.0, None

    return parse, header


def _split_csv(line: str) -> list[str]:
    if '"' not in line:
        return line.split(",")
    try:
        return next(csv.reader([line]), [])
    except csv.Error:
        return []


def _csv_parser(first: str, label: str) -> Callable:
    cols = [c.strip().lower() for c in _split_csv(first.lstrip("\ufeff"))]
    missing = [c for c in CSV_REQUIRED if c not in cols]
    if missing:
        raise errors.LogFormatError(
            f"{label}: the csv header lacks column(s) {', '.join(missing)} (it names "
            f"{', '.join(repr(c) for c in cols[:12]) or 'nothing'}); the first line must name "
            f"the columns {','.join(CSV_REQUIRED)} and optionally "
            f"{','.join(CSV_OPTIONAL)}")
    it, iu, ir = (cols.index(c) for c in CSV_REQUIRED)
    isv, il, ib, ist = (cols.index(c) if c in cols else -1 for c in CSV_OPTIONAL)
    need = max(it, iu, ir) + 1

    def parse(line: str):
        f = _split_csv(line)
        n = len(f)
        if n < need:
            return "unparseable"
        ts = _csv_time_us(f[it])
        if ts is None:
            return "bad_timestamp"
        user = f[iu].strip()
        res = f[ir].strip()
        if not user or not res:
            return "missing_field"
        path = resource_path(res) or res
        status = 0
        if 0 <= ist < n and f[ist].strip():
            status = _status(f[ist])
            if status is None:
                return "bad_status"
        nbytes = 0
        if 0 <= ib < n:
            nbytes = _nbytes(f[ib].strip())
            if nbytes is None:
                return "bad_bytes"
        latency = 0.0
        if 0 <= il < n and f[il].strip():
            try:
                latency = float(f[il])
            except ValueError:
                return "bad_latency"
            if not 0.0 <= latency <= _F32_MAX:  # also rejects nan
                return "bad_latency"
        svc = f[isv].strip() if 0 <= isv < n else ""
        return ts, user, path, status, nbytes, latency, (svc or None)

    return parse


# ----------------------------------------------------------------------------- batching

class _Columns:
    """Per-column lists of the current batch, plus the id caches of the whole run."""

    def __init__(self):
        self.user_ids: dict[str, int] = {}
        self.res_ids: dict[str, int] = {}
        self.path_svc: dict[str, int] = {}
        self.svc_ids: dict[str, int] = {}
        self._reset()

    def _reset(self):
        self.ts, self.user, self.res, self.nbytes = [], [], [], []
        self.svc, self.lat, self.status = [], [], []
        self.new = {wire.NameKind.USER: ([], []), wire.NameKind.RESOURCE: ([], []),
                    wire.NameKind.SERVICE: ([], [])}

    def _service(self, name: str) -> int:
        sid = self.svc_ids.get(name)
        if sid is None:
            sid = service_id(name)
            self.svc_ids[name] = sid
            ids, names = self.new[wire.NameKind.SERVICE]
            ids.append(sid)
            names.append(name)
        return sid

    def add(self, ts, host, path, status, nbytes, latency, svc_name):
        """Append one record. Every hash that can fail (UnicodeEncodeError on a lone
        surrogate) runs before any state changes, so a failed line leaves no trace."""
        uid = self.user_ids.get(host)
        new_user = uid is None
        if new_user:
            uid = stable_id(host)
        rid = self.res_ids.get(path)
        new_res = rid is None
        if new_res:
            rid = stable_id(path)
        if svc_name is None:  # derived from a path that is known to encode
            sid = self.path_svc.get(path)
            if sid is None:
                sid = self._service(service_name(path))
                self.path_svc[path] = sid
        else:
            sid = self._service(svc_name)  # hashes before it records anything
        if new_user:
            self.user_ids[host] = uid
            ids, names = self.new[wire.NameKind.USER]
            ids.append(uid)
            names.append(host)
        if new_res:
            self.res_ids[path] = rid
            ids, names = self.new[wire.NameKind.RESOURCE]
            ids.append(rid)
            names.append(path)
        self.ts.append(ts)
        self.user.append(uid)
        self.res.append(rid)
        self.nbytes.append(nbytes)
        self.svc.append(sid)
        self.lat.append(latency)
        self.status.append(status)

    def __len__(self) -> int:
        return len(self.ts)

    def flush(self, stats: Stats) -> Batch:
        n = len(self.ts)
        rec = np.zeros(n, wire.REQUEST)
        if n:
            rec["ts_us"] = np.array(self.ts, dtype=np.int64)
            rec["user"] = np.array(self.user, dtype=np.uint64)
            rec["resource"] = np.array(self.res, dtype=np.uint64)
            rec["bytes"] = np.array(self.nbytes, dtype=np.uint64)
            rec["service"] = np.array(self.svc, dtype=np.uint32)
            rec["latency_ms"] = np.array(self.lat, dtype=np.float32)
            rec["status"] = np.array(self.status, dtype=np.uint16)
        parts = [wire.make_names(kind, ids, names) for kind, (ids, names) in self.new.items()]
        self._reset()
        return Batch(rec, np.concatenate(parts), stats)


def _decoded(raw: Iterable, stats: Stats) -> Iterator[str]:
    for item in raw:
        if isinstance(item, (bytes, bytearray, memoryview)):
            b = bytes(item)
            try:
                item = b.decode("utf-8")
            except UnicodeDecodeError:
                stats.undecodable += 1
                item = b.decode("utf-8", "replace")
        elif not isinstance(item, str):
            raise TypeError(f"log lines must be str or bytes, not {type(item).__name__}")
        yield item.rstrip("\r\n")


def _read_file(path, label: str) -> Iterator[bytes]:
    try:
        f = gzip.open(path, "rb") if os.fspath(path).endswith(".gz") else open(path, "rb")
    except OSError as e:
        raise errors.LogFormatError(
            f"cannot open {label}: {e.strerror or e}; pass the path of a readable access "
            "log") from None
    with f:
        try:
            yield from f
        except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
            raise errors.LogFormatError(
                f"cannot read {label}: {e}; check that the file is a complete, readable "
                "log") from None


def _normalize_format(fmt: str) -> str:
    f = str(fmt).strip().lower()
    f = _ALIASES.get(f, f)
    if f not in FORMATS:
        raise errors.LogFormatError(
            f"unknown log format {fmt!r}; use one of {', '.join(FORMATS)}")
    return f


def iter_batches(path_or_lines, fmt: str, batch_size: int = 1024) -> Iterator[Batch]:
    """Parse an access log into ``Batch``es of at most ``batch_size`` REQUEST records.

    ``path_or_lines`` is a path (str or os.PathLike; ``.gz`` is decompressed) or an iterable
    of lines (str or bytes, with or without line ends). ``fmt`` is ``nasa``, ``clf`` or
    ``csv`` (see the module doc). At least one batch is yielded; the last one carries the
    final ``Stats``. Raises ``errors.LogFormatError`` (on the first ``next()``) only when the
    input as a whole is unusable.
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batch_size = int(batch_size)
    kind = _normalize_format(fmt)
    stats = Stats()
    opened = isinstance(path_or_lines, (str, bytes, os.PathLike))
    if opened:
        label = os.fsdecode(path_or_lines)
        raw = _read_file(path_or_lines, label)
    else:
        label = "the log lines"
        raw = iter(path_or_lines)
    lines = _decoded(raw, stats)
    try:
        first = None
        for line in lines:  # leading blank lines are data lines, skipped as blank
            if line.strip():
                first = line
                break
            stats.lines += 1
            stats.skip("blank")
        if first is None:
            raise errors.LogFormatError(
                f"{label} is empty: there is nothing to replay; point bae replay at a "
                f"non-empty {kind} log")
        if kind == "nasa":
            parse, header = _nasa_parser(first, label)
        elif kind == "csv":
            parse, header = _csv_parser(first, label), True
        else:
            parse, header = _parse_clf_line, False
        if not header:
            lines = chain((first,), lines)

        cols = _Columns()
        add = cols.add
        skipped = stats.skipped
        last_yield_lines = -1
        for line in lines:
            stats.lines += 1
            if not line or line.isspace():
                skipped["blank"] = skipped.get("blank", 0) + 1
                continue
            if len(line) > MAX_LINE:
                skipped["unparseable"] = skipped.get("unparseable", 0) + 1
                continue
            try:
                r = parse(line)
                if r.__class__ is str:
                    skipped[r] = skipped.get(r, 0) + 1
                    continue
                add(*r)
            except UnicodeEncodeError:
                skipped["bad_encoding"] = skipped.get("bad_encoding", 0) + 1
                continue
            stats.parsed += 1
            if len(cols) >= batch_size:
                last_yield_lines = stats.lines
                yield cols.flush(stats.copy())
        if len(cols) or last_yield_lines != stats.lines:
            yield cols.flush(stats.copy())
    finally:
        if opened:  # a caller's iterable (an open file, say) is the caller's to close
            raw.close()


def read_log(path_or_lines, fmt: str) -> tuple[np.ndarray, np.ndarray, Stats]:
    """The whole log at once: (wire.REQUEST records, wire.NAME records, final Stats)."""
    recs, names, stats = [], [], Stats()
    for b in iter_batches(path_or_lines, fmt, batch_size=1 << 16):
        recs.append(b.records)
        names.append(b.names)
        stats = b.stats
    return np.concatenate(recs), np.concatenate(names), stats
