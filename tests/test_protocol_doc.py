"""docs/protocol.md agrees with bae_core/wire.py.

The document is what producers and balancers in other languages are written from, so
its tables are parsed here and compared with the numpy dtypes, the header struct, the
enumerations and the bytes ``wire.encode`` produces.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bae_core import errors, wire

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
RECORD_HEADING = re.compile(r"^### [\d.]+ ([A-Z_]+) record \(type (\d+), (\d+) bytes\)$")
HEADER_HEADING = re.compile(r"^### [\d.]+ Header frame \((\d+) bytes\)$")


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def _sections(text: str) -> dict[str, list[str]]:
    """Lines under each ``###`` heading (up to the next heading of any level)."""
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("#"):
            current = line.strip() if line.startswith("### ") else None
            if current is not None:
                out[current] = []
        elif current is not None:
            out[current].append(line)
    return out


def _tables(lines: list[str]) -> list[list[list[str]]]:
    """The markdown tables in ``lines``: rows of stripped cells, header and rule dropped."""
    tables, rows = [], None
    for line in lines + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if rows is None:
                rows = [cells]
            elif not all(re.fullmatch(r":?-+:?", c) for c in cells):
                rows.append(cells)
        elif rows is not None:
            tables.append(rows[1:])
            rows = None
    return tables


def _table(doc: str, heading: str, index: int = 0) -> list[list[str]]:
    for title, lines in _sections(doc).items():
        if re.sub(r"^### [\d.]+ ", "", title) == heading:
            return _tables(lines)[index]
    raise AssertionError(f"docs/protocol.md has no '### <n> {heading}' section")


def _code(cell: str) -> str:
    return cell.strip("`")


def _num(cell: str):
    cell = _code(cell)
    try:
        return int(cell, 0)
    except ValueError:
        return float(cell)


def _doc_type(dt: np.dtype) -> str:
    if dt.subdtype is not None:
        base, shape = dt.subdtype
        return f"{_doc_type(base)}[{shape[0]}]"
    letter = {"i": "i", "u": "u", "f": "f"}[dt.kind]
    return f"{letter}{dt.itemsize * 8}"


def _dtype_rows(dt: np.dtype) -> list[tuple[int, int, str, str]]:
    rows = [(off, fdt.itemsize, _doc_type(fdt), name)
            for name, (fdt, off, *_) in dt.fields.items()]
    return sorted(rows)


def _doc_rows(table) -> list[tuple[int, int, str, str]]:
    return [(int(r[0]), int(r[1]), r[2], _code(r[3])) for r in table]


def _record_sections(doc: str) -> dict[str, tuple[int, int, list[str]]]:
    out = {}
    for title, lines in _sections(doc).items():
        m = RECORD_HEADING.match(title)
        if m:
            assert m.group(1) not in out, f"{m.group(1)} is documented twice"
            out[m.group(1)] = (int(m.group(2)), int(m.group(3)), lines)
    return out


# ------------------------------------------------------------------------- layouts


def test_every_record_type_is_documented(doc):
    assert set(_record_sections(doc)) == {t.name for t in wire.DTYPES}


@pytest.mark.parametrize("mtype", list(wire.DTYPES), ids=lambda t: t.name)
def test_record_table_matches_dtype(doc, mtype):
    number, size, lines = _record_sections(doc)[mtype.name]
    dt = wire.DTYPES[mtype]
    assert number == int(mtype)
    assert size == dt.itemsize
    rows = _doc_rows(_tables(lines)[0])
    assert rows == _dtype_rows(dt)
    # the fields tile the record: no gaps, no overlaps, nothing past the end
    end = 0
    for off, fsize, _, name in rows:
        assert off == end, f"{mtype.name}.{name} starts at {off}, previous field ends at {end}"
        end = off + fsize
    assert end == size


def test_header_table_matches_struct(doc):
    sections = _sections(doc)
    titles = [t for t in sections if HEADER_HEADING.match(t)]
    assert len(titles) == 1
    assert int(HEADER_HEADING.match(titles[0]).group(1)) == wire.HEADER_SIZE == 32
    names = ["magic", *wire.Header._fields]
    codes = re.findall(r"(\d*)([a-zA-Z])", wire.HEADER.format.lstrip("<"))
    assert len(codes) == len(names)
    expected, prefix = [], "<"
    for name, (n, c) in zip(names, codes):
        off = struct.calcsize(prefix)
        prefix += n + c
        size = struct.calcsize("<" + n + c)
        typ = f"char[{n}]" if c == "s" else {"H": "u16", "I": "u32", "Q": "u64"}[c]
        expected.append((off, size, typ, name))
    assert wire.HEADER.format.startswith("<")
    assert _doc_rows(_tables(sections[titles[0]])[0]) == expected
    assert f"`{wire.MAGIC.decode()}`" in _table(doc, "Header frame (32 bytes)")[0][5]


# -------------------------------------------------------------------- enumerations


def test_message_type_table(doc):
    rows = _table(doc, "Message types")
    assert [int(r[0]) for r in rows] == [int(t) for t in wire.MsgType]
    for r in rows:
        t = wire.MsgType(int(r[0]))
        assert r[1] == t.name
        assert r[3] == ("yes" if t in wire.DTYPES else "no"), t.name
        topic = wire.TOPICS.get(t)
        assert r[4] == (f"`{topic.decode('ascii')}`" if topic else "-"), t.name
        inbound = "to daemon" in r[2]
        assert inbound == (t in wire.INPUT_TYPES or t == wire.MsgType.SNAPSHOT_REQUEST), t.name


def test_enumeration_tables(doc):
    assert [(int(r[0]), r[1]) for r in _table(doc, "Tiers")] == [(int(t), t.name)
                                                                 for t in wire.Tier]
    assert [(int(r[0]), r[1]) for r in _table(doc, "Name kinds")] == [
        (int(k), k.name) for k in wire.NameKind]
    assert [(int(r[0], 16), r[1]) for r in _table(doc, "Allocation reasons")] == [
        (int(b), b.name) for b in wire.Reason]
    flags = _table(doc, "Flags")
    assert [(int(r[1], 16), r[2]) for r in flags] == [
        (wire.FLAG_ADVISORY, "ADVISORY"), (wire.FLAG_REJECTED, "REJECTED"),
        (wire.FLAG_DUPLICATE, "DUPLICATE")]


def test_rejection_reasons(doc):
    frame = _table(doc, "Frame-level rejections")
    assert [int(r[0]) for r in frame] == list(range(1, len(frame) + 1))
    documented = [_code(r[1]) for r in frame]
    wire_reasons = {c.reason for c in errors.WireError.__subclasses__()}
    assert set(documented) == wire_reasons | {"stale_sequence"}
    assert len(documented) == len(set(documented))

    record = _table(doc, "Record-level rejections")
    pairs = {(int(r[0]), _code(r[1])) for r in record}
    assert pairs == set(enumerate(wire.RECORD_REASONS)) - {(0, "ok")}
    assert {r[2] for r in record} == {t.name for t in wire.INPUT_TYPES}


# ------------------------------------------------------------------ worked example


def _h(s: str) -> int:
    """Section 13's id of a string (before the & 0xFFFFFFFF of service ids)."""
    return int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(), "little")


def _example(doc: str) -> str:
    parts = re.split(r"^## \d+\. Worked example$", doc, maxsplit=1, flags=re.M)
    assert len(parts) == 2, "docs/protocol.md has no '## <n>. Worked example' section"
    return re.split(r"^## ", parts[1], maxsplit=1, flags=re.M)[0]


def _hex_frames(doc: str) -> list[bytes]:
    block = re.search(r"```text\n(.*?)```", _example(doc), re.S)
    assert block, "the worked example has no ```text hex dump"
    frames: list[bytearray] = []
    for line in block.group(1).splitlines():
        if line.startswith("frame "):
            frames.append(bytearray())
            continue
        m = re.match(r"^([0-9a-f]{4})  ([0-9a-f ]+?) *\|", line)
        assert m, f"unreadable hex dump line: {line!r}"
        assert int(m.group(1), 16) == len(frames[-1]), f"offset of {line!r}"
        frames[-1] += bytes.fromhex(m.group(2))
    return [bytes(f) for f in frames]


def test_worked_example_hex_dump(doc):
    tables = _tables(_example(doc).splitlines())
    header = {_code(r[0]): r[1] for r in tables[0]}
    fields = {_code(r[0]): (r[1], r[2]) for r in tables[1]}

    rec = np.zeros(1, wire.REQUEST)
    assert set(fields) == set(wire.REQUEST.names)
    for name, (value, derivation) in fields.items():
        rec[name] = _num(value)
        m = re.fullmatch(r'`h\("([^"]+)"\)( & 0xFFFFFFFF)?`', derivation)
        if m:  # ids derived as section 13 says
            want = _h(m.group(1)) & (0xFFFFFFFF if m.group(2) else (1 << 64) - 1)
            assert _num(value) == want, name
    assert int(fields["ts_us"][0]) == 807256800 * 10**6  # 1995-08-01T06:00:00Z
    assert struct.pack("<f", float(fields["latency_ms"][0])).hex() == "00004841"

    frames = wire.encode(wire.MsgType.REQUEST, rec, _num(header["producer"]),
                         _num(header["sequence"]))
    assert _hex_frames(doc) == frames

    hdr = wire.decode_header(frames[0])
    assert header["magic"] == wire.MAGIC.decode()
    assert (hdr.version, int(hdr.type), hdr.record_size, hdr.flags, hdr.count) == (
        int(header["version"]), int(header["type"]), int(header["record_size"]),
        int(header["flags"]), int(header["count"]))
    _, decoded = wire.decode(frames)
    assert decoded.tobytes() == rec.tobytes()


# -------------------------------------------------------------------- C listing


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_c_structs_compile_with_the_documented_layout(doc, tmp_path):
    block = re.search(r"```c\n(.*?)```", doc, re.S)
    assert block, "the document has no ```c listing"
    checks = ["#include <stddef.h>"]
    for struct_name, dt in (("bae_request", wire.REQUEST), ("bae_allocation", wire.ALLOCATION)):
        checks.append(f"_Static_assert(sizeof({struct_name}) == {dt.itemsize}, \"{struct_name}\");")
        for name, (_, off, *_) in dt.fields.items():
            checks.append(f"_Static_assert(offsetof({struct_name}, {name}) == {off}, "
                          f"\"{struct_name}.{name}\");")
    off = 0
    for name, n in zip(["magic", *wire.Header._fields],
                       re.findall(r"\d*[a-zA-Z]", wire.HEADER.format.lstrip("<"))):
        checks.append(f"_Static_assert(offsetof(bae_header, {name}) == {off}, \"{name}\");")
        off += struct.calcsize("<" + n)
    src = tmp_path / "bae_protocol.c"
    src.write_text(block.group(1) + "\n" + "\n".join(checks) + "\n")
    proc = subprocess.run(["cc", "-std=c11", "-Wall", "-Werror", "-fsyntax-only", str(src)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
