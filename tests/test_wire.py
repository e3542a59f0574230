"""Unit and property tests of bae_core.wire (protocol v1 framing, records and validation)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bae_core import errors, wire
from bae_core.wire import MsgType

NOW = 1_700_000_000_000_000  # µs, 2023-11-14
PAST_US = 3600 * 1_000_000
FUTURE_US = 300 * 1_000_000
ALL_TYPES = frozenset(MsgType)
CODE = {name: i for i, name in enumerate(wire.RECORD_REASONS)}

PROPS = settings(max_examples=300, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])


def header(mtype=MsgType.REQUEST, count=0, producer=7, sequence=3, flags=0, record_size=None,
           magic=wire.MAGIC, version=wire.VERSION) -> bytes:
    if record_size is None:
        dt = wire.DTYPES.get(MsgType(mtype)) if mtype in set(MsgType) else None
        record_size = dt.itemsize if dt is not None else 0
    return wire.HEADER.pack(magic, version, int(mtype), record_size, flags, count, producer,
                            sequence)


def random_records(mtype: MsgType, n: int, seed: int = 0) -> np.ndarray:
    """n records of DTYPES[mtype] with random bytes, reserved bytes zero."""
    dt = wire.DTYPES[mtype]
    rng = np.random.default_rng(seed)
    recs = np.frombuffer(rng.integers(0, 256, n * dt.itemsize, dtype=np.uint8).tobytes(),
                         dt).copy()
    if "reserved" in dt.names:
        recs["reserved"] = 0
    return recs


def requests(n=1, **fields) -> np.ndarray:
    r = np.zeros(n, wire.REQUEST)
    r["ts_us"] = NOW
    r["user"] = 1
    r["resource"] = 2
    r["service"] = 3
    r["latency_ms"] = 12.5
    r["status"] = 200
    for k, v in fields.items():
        r[k] = v
    return r


def codes_of(mtype, recs, now=NOW, past=PAST_US, future=FUTURE_US):
    codes = wire.validate(mtype, recs, now, past, future)
    return [0] * len(recs) if codes is None else codes.tolist()


# ---- layout -----------------------------------------------------------------------------

@pytest.mark.parametrize("mtype,size", [
    (MsgType.REQUEST, 48), (MsgType.METRIC, 32), (MsgType.CONTEXT, 40), (MsgType.PROFILE, 24),
    (MsgType.NAME, 64), (MsgType.ALLOCATION, 56), (MsgType.PREWARM, 32), (MsgType.TIER, 32),
    (MsgType.PREFETCH, 32)])
def test_record_sizes_match_spec(mtype, size):
    assert wire.DTYPES[mtype].itemsize == size
    assert wire.HEADER_SIZE == 32


def test_worked_example_bytes():
    """docs/protocol.md section 14, byte for byte."""
    r = requests(ts_us=807256800000000, user=0x074106E64AE6D5AF, resource=0xDAB29FA60CC7E1BB,
                 bytes=1713, service=0x381A8CCB, latency_ms=12.5, status=200)
    h, body = wire.encode(MsgType.REQUEST, r, 0x0102030405060708, 5)
    assert h == bytes.fromhex("42414557 0100 0100 3000 0000 01000000 0807060504030201"
                              "0500000000000000")
    assert body == bytes.fromhex(
        "0078ce1e32de0200 afd5e64ae6064107 bbe1c70ca69fb2da b106000000000000"
        "cb8c1a38 00004841 c800 0000 00 000000")


# ---- round trips ------------------------------------------------------------------------

@pytest.mark.parametrize("mtype", list(wire.DTYPES))
@pytest.mark.parametrize("n", [0, 1, 5])
def test_encode_decode_round_trip_every_type(mtype, n):
    recs = random_records(mtype, n, seed=int(mtype) * 10 + n)
    frames = wire.encode(mtype, recs, producer=0xDEADBEEF, sequence=42, flags=1)
    assert len(frames) == 2 and len(frames[0]) == wire.HEADER_SIZE
    assert len(frames[1]) == n * wire.DTYPES[mtype].itemsize
    hdr, got = wire.decode(frames, accept=ALL_TYPES)
    assert hdr == wire.Header(1, mtype, wire.DTYPES[mtype].itemsize, 1, n, 0xDEADBEEF, 42)
    assert got.dtype == wire.DTYPES[mtype]
    assert got.tobytes() == recs.tobytes()  # bytewise: float fields may hold NaN patterns


@pytest.mark.parametrize("mtype", sorted(wire.CONTROL_TYPES))
def test_control_types_round_trip(mtype):
    frames = wire.encode(mtype, None, producer=9, sequence=11)
    assert frames[1] == b""
    hdr, recs = wire.decode(frames, accept=wire.CONTROL_TYPES)
    assert hdr == wire.Header(1, mtype, 0, 0, 0, 9, 11)
    assert len(recs) == 0


@pytest.mark.parametrize("mtype", list(wire.DTYPES))
def test_decode_is_zero_copy(mtype):
    recs = random_records(mtype, 4, seed=3)
    h, body = wire.encode(mtype, recs, 1, 1)
    buf = bytearray(body)
    _, got = wire.decode([h, buf], accept=ALL_TYPES)
    assert np.shares_memory(got, np.frombuffer(buf, np.uint8))
    # and through a memoryview
    _, got2 = wire.decode([memoryview(h), memoryview(buf)], accept=ALL_TYPES)
    assert np.shares_memory(got2, np.frombuffer(buf, np.uint8))


@pytest.mark.parametrize("mtype", list(wire.DTYPES))
@pytest.mark.parametrize("extra", [1, 8, 100])
def test_forward_compatible_larger_record_size(mtype, extra):
    recs = random_records(mtype, 3, seed=extra)
    size = recs.dtype.itemsize + extra
    tail = bytes([0xA5]) * extra
    body = b"".join(r.tobytes() + tail for r in recs)
    h = header(mtype, count=3, record_size=size)
    hdr, got = wire.decode([h, body], accept=ALL_TYPES)
    assert hdr.record_size == size and hdr.count == 3 and len(got) == 3
    assert got.dtype.itemsize == size
    assert list(got.dtype.names) == list(recs.dtype.names)
    for name in recs.dtype.names:
        assert got[name].tobytes() == recs[name].tobytes(), name
    # a v1 re-encode of the newer records drops the appended bytes
    h2, b2 = wire.encode(mtype, got, 1, 2)
    assert b2 == recs.tobytes()
    assert wire.decode_header(h2).record_size == recs.dtype.itemsize


def test_forward_compatible_records_validate():
    r = requests(3, latency_ms=[1.0, np.nan, -1.0])
    body = b"".join(x.tobytes() + b"\x01\x02\x03" for x in r)
    hdr, got = wire.decode([header(MsgType.REQUEST, 3, record_size=51), body])
    assert codes_of(hdr.type, got) == [0, CODE["non_finite"], CODE["negative"]]


def test_encode_zeroes_reserved_bytes_without_touching_input():
    for mtype in (MsgType.REQUEST, MsgType.PROFILE, MsgType.ALLOCATION, MsgType.TIER,
                  MsgType.PREFETCH):
        recs = random_records(mtype, 3, seed=1)
        recs["reserved"] = 0xFF if recs.dtype["reserved"].shape else 0xFFFF
        before = recs.tobytes()
        _, body = wire.encode(mtype, recs, 1, 1)
        got = np.frombuffer(body, wire.DTYPES[mtype])
        assert not got["reserved"].any()
        assert recs.tobytes() == before  # the caller's array is not modified
        for name in recs.dtype.names:
            if name != "reserved":
                assert got[name].tobytes() == recs[name].tobytes()


def test_encode_converts_compatible_dtype():
    r = requests(2)
    # same fields in the same order, wider types, packed layout
    wide = np.zeros(2, [("ts_us", "<i8"), ("user", "<u8"), ("resource", "<u8"),
                        ("bytes", "<u8"), ("service", "<u8"), ("latency_ms", "<f8"),
                        ("status", "<u4"), ("geo", "<u4"), ("device", "<u2"),
                        ("reserved", "3u1")])
    for name in wide.dtype.names:
        wide[name] = r[name]
    assert wire.encode(MsgType.REQUEST, wide, 1, 1) == wire.encode(MsgType.REQUEST, r, 1, 1)


# ---- frame-level rejections ---------------------------------------------------------------

def reject(frames, exc, reason, **kw):
    with pytest.raises(exc) as ei:
        wire.decode(frames, **kw)
    e = ei.value
    assert isinstance(e, errors.WireError) and isinstance(e, errors.BAEError)
    assert e.reason == reason
    assert str(e).startswith(reason + ":")
    return e


def test_reason_codes_are_distinct():
    classes = [errors.BadFrameCount, errors.BadHeader, errors.BadMagic,
               errors.UnsupportedVersion, errors.UnknownType, errors.UnexpectedType,
               errors.BadRecordSize, errors.OversizedFrame, errors.TruncatedFrame,
               errors.CountMismatch]
    assert len({c.reason for c in classes}) == len(classes)


@pytest.mark.parametrize("frames", [[], [b"x" * 32], [header(), b"", b""],
                                    [b"t", header(), b""]])
def test_bad_frame_count(frames):
    e = reject(frames, errors.BadFrameCount, "bad_frame_count")
    assert e.count == 0


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_bad_header_size(size):
    h = (header(count=1) * 2)[:size]
    e = reject([h, requests().tobytes()], errors.BadHeader, "bad_header")
    assert e.count == 0


def test_bad_magic():
    e = reject([header(magic=b"BAEX", count=1), requests().tobytes()], errors.BadMagic,
               "bad_magic")
    assert e.count == 0


@pytest.mark.parametrize("version", [0, 2, 0xFFFF])
def test_unsupported_version(version):
    reject([header(version=version), b""], errors.UnsupportedVersion, "unsupported_version")


@pytest.mark.parametrize("mtype", [0, 6, 15, 20, 31, 36, 0xFFFF])
def test_unknown_type_sets_producer_and_sequence(mtype):
    h = wire.HEADER.pack(wire.MAGIC, 1, mtype, 16, 0, 2, 0xABCDEF, 77)
    e = reject([h, b"\0" * 32], errors.UnknownType, "unknown_type")
    assert e.producer == 0xABCDEF and e.sequence == 77


@pytest.mark.parametrize("mtype", [MsgType.ALLOCATION, MsgType.PREWARM, MsgType.TIER,
                                   MsgType.PREFETCH])
def test_unexpected_output_type_on_ingest(mtype):
    recs = random_records(mtype, 3)
    e = reject(wire.encode(mtype, recs, 1, 1), errors.UnexpectedType, "unexpected_type")
    assert e.count == 3


@pytest.mark.parametrize("mtype", sorted(wire.CONTROL_TYPES))
def test_unexpected_control_type_on_ingest(mtype):
    reject(wire.encode(mtype, None, 1, 1), errors.UnexpectedType, "unexpected_type")


def test_accept_restricts_input_types():
    frames = wire.encode(MsgType.REQUEST, requests(2), 1, 1)
    e = reject(frames, errors.UnexpectedType, "unexpected_type",
               accept=frozenset({MsgType.METRIC}))
    assert e.count == 2


@pytest.mark.parametrize("mtype", list(wire.DTYPES))
def test_bad_record_size_too_small(mtype):
    size = wire.DTYPES[mtype].itemsize
    for rs in (0, size - 1):
        reject([header(mtype, count=0, record_size=rs), b""], errors.BadRecordSize,
               "bad_record_size", accept=ALL_TYPES)


@pytest.mark.parametrize("mtype", sorted(wire.CONTROL_TYPES))
def test_bad_record_size_nonzero_for_control(mtype):
    # check 6 (bad_record_size) comes before check 7 (unexpected_type)
    reject([header(mtype, record_size=8), b""], errors.BadRecordSize, "bad_record_size")
    reject([header(mtype, record_size=8), b""], errors.BadRecordSize, "bad_record_size",
           accept=ALL_TYPES)


def test_bad_record_size_reports_declared_count():
    e = reject([header(MsgType.REQUEST, count=4, record_size=40), b"\0" * 160],
               errors.BadRecordSize, "bad_record_size")
    assert e.count == 4


def test_oversized():
    n = 5
    e = reject([header(count=n), requests(n).tobytes()], errors.OversizedFrame, "oversized",
               max_records=4)
    assert e.count == 4  # min(declared, limit)
    # at the limit it decodes
    _, recs = wire.decode([header(count=n), requests(n).tobytes()], max_records=5)
    assert len(recs) == n
    e = reject([header(count=(1 << 32) - 1), b""], errors.OversizedFrame, "oversized")
    assert e.count == wire.DEFAULT_MAX_RECORDS


@pytest.mark.parametrize("cut", [1, 47, 48, 95])
def test_truncated(cut):
    body = requests(3).tobytes()
    e = reject([header(count=3), body[:-cut]], errors.TruncatedFrame, "truncated")
    assert e.count == 3


@pytest.mark.parametrize("extra", [1, 47, 48])
def test_count_mismatch_longer_body(extra):
    body = requests(2).tobytes() + b"\0" * extra
    e = reject([header(count=2), body], errors.CountMismatch, "count_mismatch")
    assert e.count == 2


def test_count_mismatch_zero_count_with_body():
    e = reject([header(count=0), requests(1).tobytes()], errors.CountMismatch,
               "count_mismatch")
    assert e.count == 0


@pytest.mark.parametrize("mtype", sorted(wire.CONTROL_TYPES))
def test_count_mismatch_control_types(mtype):
    e = reject([header(mtype, count=2), b""], errors.CountMismatch, "count_mismatch",
               accept=ALL_TYPES)
    assert e.count == 2
    e = reject([header(mtype, count=0), b"\0"], errors.CountMismatch, "count_mismatch",
               accept=ALL_TYPES)
    assert e.count == 0


def test_flags_are_carried_not_checked():
    hdr, recs = wire.decode([header(count=1, flags=0xFFFF), requests().tobytes()])
    assert hdr.flags == 0xFFFF and len(recs) == 1


def test_decode_header_alone():
    h = wire.decode_header(header(MsgType.METRIC, count=9, producer=2**64 - 1,
                                  sequence=2**64 - 2))
    assert h.type is MsgType.METRIC and h.count == 9
    assert h.producer == 2**64 - 1 and h.sequence == 2**64 - 2
    with pytest.raises(errors.BadHeader):
        wire.decode_header(b"")


# ---- record-level validation --------------------------------------------------------------

def test_valid_records_return_none():
    assert wire.validate(MsgType.REQUEST, requests(4), NOW, PAST_US, FUTURE_US) is None
    assert wire.validate(MsgType.REQUEST, requests(0), NOW, PAST_US, FUTURE_US) is None
    for mtype in (MsgType.ALLOCATION, MsgType.PREWARM, MsgType.TIER, MsgType.PREFETCH):
        assert wire.validate(mtype, random_records(mtype, 3), NOW, 1, 1) is None


def test_request_codes():
    r = requests(9)
    r["latency_ms"][1] = np.nan
    r["latency_ms"][2] = np.inf
    r["latency_ms"][3] = -np.inf
    r["latency_ms"][4] = -0.5
    r["status"][5] = 1000
    r["user"][6] = wire.NO_ID
    r["resource"][7] = wire.NO_ID
    r["status"][8] = 999
    codes = wire.validate(MsgType.REQUEST, r, NOW, PAST_US, FUTURE_US)
    assert codes.dtype == np.uint8
    assert codes.tolist() == [0, CODE["non_finite"], CODE["non_finite"], CODE["non_finite"],
                              CODE["negative"], CODE["bad_enum"], CODE["bad_id"],
                              CODE["bad_id"], 0]


def test_request_check_order():
    # NaN latency wins over skew, skew over bad id, bad id over bad status
    r = requests(3)
    r[0]["latency_ms"], r[0]["ts_us"] = np.nan, 0
    r[1]["ts_us"], r[1]["user"] = 0, wire.NO_ID
    r[2]["user"], r[2]["status"] = wire.NO_ID, 5000
    assert codes_of(MsgType.REQUEST, r) == [CODE["non_finite"], CODE["timestamp_skew"],
                                            CODE["bad_id"]]


@pytest.mark.parametrize("mtype", [MsgType.REQUEST, MsgType.METRIC, MsgType.CONTEXT,
                                   MsgType.PROFILE])
def test_timestamp_skew_both_sides_and_disabled(mtype):
    recs = valid_records(mtype, 6)
    recs["ts_us"] = [NOW - 10_000_001, NOW - 10_000_000, NOW, NOW + 5_000_000,
                     NOW + 5_000_001, -(2**63)]
    skew = CODE["timestamp_skew"]
    assert codes_of(mtype, recs, NOW, 10_000_000, 5_000_000) == [skew, 0, 0, 0, skew, skew]
    assert codes_of(mtype, recs, NOW, 0, 5_000_000) == [0, 0, 0, 0, skew, 0]
    assert codes_of(mtype, recs, NOW, 10_000_000, 0) == [skew, 0, 0, 0, 0, skew]
    assert codes_of(mtype, recs, NOW, 0, 0) == [0] * 6
    recs["ts_us"][0] = 2**63 - 1
    assert codes_of(mtype, recs, NOW, 0, 0) == [0] * 6


def test_metric_codes():
    m = valid_records(MsgType.METRIC, 6)
    m["cpu"][1] = np.nan
    m["db_query_ms"][2] = np.inf
    m["cpu"][3] = -0.1
    m["db_query_ms"][4] = -1
    m["ts_us"][5] = NOW + FUTURE_US + 1
    assert codes_of(MsgType.METRIC, m) == [0, CODE["non_finite"], CODE["non_finite"],
                                           CODE["negative"], CODE["negative"],
                                           CODE["timestamp_skew"]]


def test_context_codes():
    c = valid_records(MsgType.CONTEXT, 8)
    c["multiplier"][1] = np.nan
    c["multiplier"][2] = 0.0
    c["multiplier"][3] = -2.0
    c["start_us"][4] = -1
    c["end_us"][5] = c["start_us"][5]
    c["end_us"][6] = c["start_us"][6] - 1
    c["ts_us"][7] = NOW - PAST_US - 1
    assert codes_of(MsgType.CONTEXT, c) == [0, CODE["non_finite"], CODE["negative"],
                                            CODE["negative"], CODE["negative"],
                                            CODE["bad_interval"], CODE["bad_interval"],
                                            CODE["timestamp_skew"]]


def test_profile_codes():
    p = valid_records(MsgType.PROFILE, 5)
    p["user"][1] = wire.NO_ID
    p["tier"][2] = 3
    p["tier"][3] = 255
    p["tier"][4] = 2
    assert codes_of(MsgType.PROFILE, p) == [0, CODE["bad_id"], CODE["bad_enum"],
                                            CODE["bad_enum"], 0]


def test_name_codes():
    n = wire.make_names(wire.NameKind.SERVICE, list(range(8)), ["svc"] * 8)
    n["kind"][1] = 0
    n["kind"][2] = 8
    n["length"][3] = 0
    n["length"][4] = 55
    n["length"][5] = 54  # valid: "svc" then zero bytes (NUL is valid UTF-8)
    n["name"][6, :2] = [0xC3, 0x28]  # invalid continuation byte
    n["name"][7, :3] = [0xE2, 0x82, 0xAC]  # "€"
    assert codes_of(MsgType.NAME, n) == [0, CODE["bad_enum"], CODE["bad_enum"],
                                         CODE["bad_name"], CODE["bad_name"], 0,
                                         CODE["bad_name"], 0]
    assert wire.name_str(n[7]) == "€"


def test_name_cut_inside_multibyte_char_is_bad():
    n = wire.make_names(wire.NameKind.USER, [1], ["é"])
    assert n["length"][0] == 2
    n["length"][0] = 1  # first byte of a two-byte sequence only
    assert codes_of(MsgType.NAME, n) == [CODE["bad_name"]]


@pytest.mark.parametrize("kind", list(wire.NameKind))
def test_name_kinds_all_valid(kind):
    assert wire.validate(MsgType.NAME, wire.make_names(kind, [1], ["x"]), NOW, 1, 1) is None


# ---- names --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a", "images", "x" * 54, "ünïcødé", "服务", "🚀 launch",
                                  "a\x00b"])
def test_make_names_round_trip(name):
    n = wire.make_names(wire.NameKind.SERVICE, [0xFFFFFFFE], [name])
    assert n.dtype == wire.NAME
    assert n["id"][0] == 0xFFFFFFFE and n["kind"][0] == wire.NameKind.SERVICE
    assert n["length"][0] == len(name.encode())
    assert wire.name_str(n[0]) == name
    assert not n["name"][0, n["length"][0]:].any()  # the rest is zero


@pytest.mark.parametrize("name,expect", [
    ("x" * 60, "x" * 54),
    ("x" * 53 + "é", "x" * 53),  # é is 2 bytes: 55 bytes, cut before it
    ("x" * 52 + "é", "x" * 52 + "é"),  # exactly 54 bytes
    ("x" * 52 + "€", "x" * 52),  # € is 3 bytes
    ("x" * 51 + "🚀", "x" * 51),  # 4 bytes, 55 total
    ("x" * 50 + "🚀", "x" * 50 + "🚀"),
    ("服" * 20, "服" * 18),  # 60 bytes -> 54 bytes
])
def test_make_names_cuts_at_character_boundary(name, expect):
    n = wire.make_names(wire.NameKind.SEGMENT, [5], [name])
    assert wire.name_str(n[0]) == expect
    assert n["length"][0] == len(expect.encode()) <= wire.NAME_BYTES
    assert wire.validate(MsgType.NAME, n, NOW, 0, 0) is None


def test_make_names_many_and_empty():
    ids = [1, 2, 2**64 - 2]
    names = ["one", "two", "big"]
    n = wire.make_names(wire.NameKind.USER, ids, names)
    assert n["id"].tolist() == ids
    assert [wire.name_str(r) for r in n] == names
    assert len(wire.make_names(wire.NameKind.USER, [], [])) == 0
    _, body = wire.encode(MsgType.NAME, n, 1, 1)
    _, back = wire.decode([header(MsgType.NAME, 3), body])
    assert [wire.name_str(r) for r in back] == names


# ---- valid record strategies (property tests) ---------------------------------------------

U64 = st.integers(0, 2**64 - 2)
U32 = st.integers(0, 2**32 - 1)
TS = st.integers(NOW - PAST_US, NOW + FUTURE_US)
F32_BIG = float(np.float32(1e30))  # bounds of a width-32 strategy must be exact f32 values
F32_TINY = float(np.float32(1e-30))
F32_NONNEG = st.floats(0, F32_BIG, width=32, allow_nan=False, allow_infinity=False)


def valid_records(mtype, n):
    """n simple valid records of an input type."""
    recs = np.zeros(n, wire.DTYPES[mtype])
    if "ts_us" in recs.dtype.names:
        recs["ts_us"] = NOW
    if mtype == MsgType.REQUEST:
        return requests(n)
    if mtype == MsgType.CONTEXT:
        recs["start_us"] = NOW
        recs["end_us"] = NOW + 1
        recs["multiplier"] = 2.0
    if mtype == MsgType.METRIC:
        recs["cpu"] = 0.5
    if mtype == MsgType.NAME:
        return wire.make_names(wire.NameKind.USER, range(n), ["u"] * n)
    return recs


@st.composite
def request_rec(draw):
    return (draw(TS), draw(U64), draw(U64), draw(st.integers(0, 2**64 - 1)), draw(U32),
            draw(F32_NONNEG), draw(st.integers(0, 999)), draw(st.integers(0, 65535)),
            draw(st.integers(0, 255)), (0, 0, 0))


@st.composite
def metric_rec(draw):
    return (draw(TS), draw(st.integers(0, 2**64 - 1)), draw(U32), draw(U32),
            draw(F32_NONNEG), draw(F32_NONNEG))


@st.composite
def context_rec(draw):
    start = draw(st.integers(0, 2**63 - 2))
    end = draw(st.integers(start + 1, 2**63 - 1))
    mult = draw(st.floats(F32_TINY, F32_BIG, width=32, allow_nan=False, allow_infinity=False))
    return (draw(TS), start, end, draw(U32), draw(U32), draw(U32), mult)


@st.composite
def profile_rec(draw):
    return (draw(TS), draw(U64), draw(U32), draw(st.integers(0, 2)), (0, 0, 0))


@st.composite
def name_rec(draw):
    s = draw(st.text(min_size=1, max_size=13))
    b = s.encode()
    buf = np.zeros(wire.NAME_BYTES, np.uint8)
    buf[: len(b)] = np.frombuffer(b, np.uint8)
    return (draw(st.integers(0, 2**64 - 1)), draw(st.integers(1, 7)), len(b), buf)


STRATS = {MsgType.REQUEST: request_rec(), MsgType.METRIC: metric_rec(),
          MsgType.CONTEXT: context_rec(), MsgType.PROFILE: profile_rec(),
          MsgType.NAME: name_rec()}


@pytest.mark.parametrize("mtype", sorted(wire.INPUT_TYPES))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_property_valid_records_round_trip(mtype, data):
    rows = data.draw(st.lists(STRATS[mtype], min_size=0, max_size=8))
    recs = np.array(rows, dtype=wire.DTYPES[mtype]) if rows else np.zeros(0, wire.DTYPES[mtype])
    producer = data.draw(st.integers(0, 2**64 - 1))
    seq = data.draw(st.integers(0, 2**64 - 1))
    frames = wire.encode(mtype, recs, producer, seq)
    hdr, got = wire.decode(frames)
    assert (hdr.type, hdr.count, hdr.producer, hdr.sequence) == (mtype, len(rows), producer,
                                                                 seq)
    assert got.tobytes() == recs.tobytes()
    for name in recs.dtype.names:
        np.testing.assert_array_equal(got[name], recs[name])
    assert wire.validate(mtype, got, NOW, PAST_US, FUTURE_US) is None
    if mtype == MsgType.NAME:
        for a, b in zip(got, recs):
            assert wire.name_str(a) == wire.name_str(b)


# ---- robustness properties ------------------------------------------------------------------

def _check_decoded(hdr, recs, frames):
    assert isinstance(hdr, wire.Header)
    assert hdr.count == len(recs)
    body = memoryview(frames[1]).nbytes
    if hdr.type in wire.DTYPES:
        assert hdr.record_size >= wire.DTYPES[hdr.type].itemsize
        assert body == hdr.count * hdr.record_size
        assert recs.dtype.itemsize == hdr.record_size
    else:
        assert hdr.record_size == 0 and body == 0 and hdr.count == 0
    for past, future in ((PAST_US, FUTURE_US), (0, 0)):
        codes = wire.validate(hdr.type, recs, NOW, past, future)
        if codes is not None:
            assert codes.shape == (len(recs),) and codes.dtype == np.uint8
            assert codes.max() < len(wire.RECORD_REASONS) and codes.any()


@st.composite
def plausible_header(draw):
    """Headers that get past the early checks often enough to reach the later ones."""
    mtype = draw(st.one_of(st.sampled_from([int(t) for t in MsgType]),
                           st.integers(0, 0xFFFF)))
    base = wire.DTYPES.get(MsgType(mtype)).itemsize if mtype in set(MsgType) and \
        MsgType(mtype) in wire.DTYPES else 0
    rsize = draw(st.one_of(st.just(base), st.integers(base, base + 16),
                           st.integers(0, 0xFFFF)))
    magic = draw(st.one_of(st.just(wire.MAGIC), st.just(wire.MAGIC), st.just(wire.MAGIC),
                           st.binary(min_size=4, max_size=4)))
    version = draw(st.one_of(st.just(1), st.just(1), st.just(1), st.integers(0, 0xFFFF)))
    count = draw(st.one_of(st.integers(0, 6), st.integers(0, 6), st.integers(0, 2**32 - 1)))
    return wire.HEADER.pack(magic, version, mtype, rsize, draw(st.integers(0, 0xFFFF)), count,
                            draw(st.integers(0, 2**64 - 1)), draw(st.integers(0, 2**64 - 1)))


@st.composite
def frame_lists(draw):
    n = draw(st.sampled_from([2, 2, 2, 2, 1, 3, 4]))
    frames = []
    for i in range(n):
        if i == 0 and draw(st.sampled_from([True, True, True, False])):
            frames.append(draw(plausible_header()))
        elif i == 1 and len(frames[0]) == 32 and draw(st.sampled_from([True, True, False])):
            _, _, _, rs, _, cnt, _, _ = wire.HEADER.unpack(frames[0])
            size = rs * min(cnt, 6) + draw(st.sampled_from([0, 0, 0, -1, 1]))
            frames.append(draw(st.binary(min_size=max(size, 0), max_size=max(size, 0))))
        else:
            frames.append(draw(st.binary(max_size=200)))
    return frames


@PROPS
@given(frames=frame_lists(), accept_all=st.booleans(),
       max_records=st.integers(1, wire.DEFAULT_MAX_RECORDS))
def test_property_arbitrary_frames_raise_only_wire_errors(frames, accept_all, max_records):
    accept = ALL_TYPES if accept_all else wire.INPUT_TYPES
    try:
        hdr, recs = wire.decode(frames, max_records=max_records, accept=accept)
    except errors.WireError as e:
        assert e.reason in {"bad_frame_count", "bad_header", "bad_magic", "unsupported_version",
                            "unknown_type", "unexpected_type", "bad_record_size", "oversized",
                            "truncated", "count_mismatch"}
        assert 0 <= e.count <= max_records
        return
    assert len(frames) == 2
    assert hdr.type in accept
    assert hdr.count <= max_records
    _check_decoded(hdr, recs, frames)


@st.composite
def valid_message(draw):
    mtype = draw(st.sampled_from(sorted(wire.INPUT_TYPES)))
    rows = draw(st.lists(STRATS[mtype], min_size=1, max_size=4))
    return wire.encode(mtype, np.array(rows, dtype=wire.DTYPES[mtype]),
                       draw(st.integers(0, 2**64 - 1)), draw(st.integers(0, 2**64 - 1)))


@st.composite
def mutated_message(draw):
    h, body = draw(valid_message())
    h, body = bytearray(h), bytearray(body)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip_h", "flip_b", "trunc_h", "trunc_b", "ext_h", "ext_b",
                                   "field"]))
        if op == "flip_h":
            i = draw(st.integers(0, len(h) - 1)) if h else 0
            if h:
                h[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "flip_b" and body:
            i = draw(st.integers(0, len(body) - 1))
            body[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "trunc_h":
            del h[draw(st.integers(0, len(h))):]
        elif op == "trunc_b":
            del body[draw(st.integers(0, len(body))):]
        elif op == "ext_h":
            h += draw(st.binary(min_size=1, max_size=8))
        elif op == "ext_b":
            body += draw(st.binary(min_size=1, max_size=80))
        elif op == "field" and len(h) == 32:
            # offset, struct format of one header field
            off, fmt = draw(st.sampled_from([(4, "<H"), (6, "<H"), (8, "<H"), (10, "<H"),
                                             (12, "<I"), (16, "<Q"), (24, "<Q")]))
            v = draw(st.integers(0, 2 ** (8 * struct.calcsize(fmt)) - 1))
            struct.pack_into(fmt, h, off, v)
    return [bytes(h), bytes(body)]


@PROPS
@given(frames=mutated_message())
def test_property_mutated_frames_decode_consistently_or_raise_wire_error(frames):
    try:
        hdr, recs = wire.decode(frames)
    except errors.WireError as e:
        assert isinstance(e.reason, str) and e.reason != "malformed"
        return
    assert hdr.type in wire.INPUT_TYPES
    _check_decoded(hdr, recs, frames)
    # what decoded re-encodes to the same v1 fields
    h2, b2 = wire.encode(hdr.type, recs, hdr.producer, hdr.sequence, hdr.flags)
    hdr2, recs2 = wire.decode([h2, b2])
    assert (hdr2.type, hdr2.count, hdr2.producer, hdr2.sequence, hdr2.flags) == \
        (hdr.type, hdr.count, hdr.producer, hdr.sequence, hdr.flags)
    for name in recs.dtype.names:
        if name != "reserved":
            assert recs2[name].tobytes() == recs[name].tobytes()


@PROPS
@given(data=st.binary(min_size=0, max_size=300))
def test_property_random_bytes_after_valid_header(data):
    """A valid header with a random body: count/size checks catch every mismatch."""
    for mtype in wire.INPUT_TYPES:
        size = wire.DTYPES[mtype].itemsize
        count = len(data) // size
        try:
            hdr, recs = wire.decode([header(mtype, count=count), data])
        except errors.CountMismatch as e:
            assert len(data) % size and e.count == count
            continue
        assert len(data) % size == 0
        _check_decoded(hdr, recs, [b"", data])
