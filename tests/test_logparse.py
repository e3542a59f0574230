"""bae_core.logparse: real access logs -> REQUEST batches for ``bae replay``."""

from __future__ import annotations

import gzip
import hashlib
import io
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bae_core import errors, logparse as lp, wire

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NASA = DATA / "nasa-http" / "nasa_19950801.tsv"
UTC = timezone.utc


def utc_us(y, mo, d, h=0, mi=0, s=0, us=0, offset_h=0, offset_m=0) -> int:
    """Independent reference: microseconds since the epoch of a local time at an offset."""
    tz = timezone(timedelta(hours=offset_h, minutes=offset_m))
    dt = datetime(y, mo, d, h, mi, s, us, tzinfo=tz)
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def names_by_kind(names: np.ndarray) -> dict[int, dict[int, str]]:
    out: dict[int, dict[int, str]] = {}
    for n in names:
        out.setdefault(int(n["kind"]), {})[int(n["id"])] = wire.name_str(n)
    return out


# ------------------------------------------------------------------------------- ids

def test_stable_id_is_little_endian_blake2b_64():
    for s in ("pppa006.compuserve.com", "/images/launch-logo.gif", "", "é/ü"):
        d = hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest()
        want = int.from_bytes(d, "little")
        assert lp.stable_id(s) == (want if want != wire.NO_ID else wire.NO_ID - 1)
    assert lp.service_id("shuttle") == lp.stable_id("shuttle") & 0xFFFFFFFF
    assert lp.service_id("shuttle") != wire.ALL


@pytest.mark.parametrize("path,service", [
    ("/shuttle/missions/x.html", "shuttle"), ("/images/a.gif", "images"), ("/", "root"),
    ("/index.html", "root"), ("/History/Apollo/", "history"), ("/ksc.html", "root"),
    ("/shuttle/", "shuttle"), ("//cgi-bin/x", "cgi-bin"),
])
def test_service_name(path, service):
    assert lp.service_name(path) == service


@pytest.mark.parametrize("target,path", [
    ("/a/b.html?x=1&y=2", "/a/b.html"), ("/a#frag", "/a"), ("http://example.com/p/q?z", "/p/q"),
    ("https://example.com", "/"), ("*", None), ("example.com:443", None), ("", None),
])
def test_resource_path(target, path):
    assert lp.resource_path(target) == path


def test_make_names_cuts_long_names_on_a_character_boundary():
    ids = [1, 2, wire.NO_ID - 1]
    strs = ["a" * 80, "é" * 40, "/shuttle/missions/sts-70/images/KSC-95EC-0911.jpg"]
    mine = wire.make_names(wire.NameKind.RESOURCE, ids, strs)
    assert wire.name_str(mine[0]) == "a" * 54 and wire.name_str(mine[2]) == strs[2]
    assert wire.validate(wire.MsgType.NAME, mine, 0, 0, 0) is None
    assert wire.name_str(mine[1]) == "é" * 27  # 54 bytes, cut at a character boundary


# ------------------------------------------------------------------------------- NASA

@pytest.fixture(scope="module")
def nasa_truth():
    """Facts counted straight from the file, without logparse."""
    if not NASA.exists():
        pytest.fail(f"NASA trace not found at {NASA}: tests read ../shared/data")
    rows = NASA.read_text("ascii").splitlines()
    header, rows = rows[0].split("\t"), [r.split("\t") for r in rows[1:]]
    assert header[:7] == ["host", "logname", "time", "method", "url", "response", "bytes"]
    paths = [r[4].split("?")[0] for r in rows]
    return {
        "rows": rows,
        "hosts": {r[0] for r in rows},
        "paths": set(paths),
        "times": [int(r[2]) for r in rows],
        "status": Counter(int(r[5]) for r in rows),
        "bytes": sum(int(r[6]) if r[6] not in ("", "-") else 0 for r in rows),
        # first segment (leading slashes collapsed) when another "/" follows, else root
        "services": Counter(p.lstrip("/").split("/")[0].lower() if "/" in p.lstrip("/")
                            else "root" for p in paths),
    }


def test_nasa_whole_file(nasa_truth):
    t0 = time.perf_counter()
    recs, names, stats = lp.read_log(NASA, "nasa")
    elapsed = time.perf_counter() - t0
    assert elapsed < 5.0  # ~0.1 s measured; generous for a loaded CI box

    rows = nasa_truth["rows"]
    assert len(rows) == 30969
    assert stats.lines == stats.parsed == len(recs) == 30969
    assert stats.skipped == {} and stats.undecodable == 0
    assert recs.dtype == wire.REQUEST

    ts = recs["ts_us"]
    assert ts[0] == 807256800 * 1_000_000 and ts[-1] == 807303121 * 1_000_000
    assert np.all(np.diff(ts) >= 0)
    assert ts.tolist() == [t * 1_000_000 for t in nasa_truth["times"]]

    assert dict(Counter(recs["status"].tolist())) == dict(nasa_truth["status"])
    assert nasa_truth["status"][200] == 27972 and nasa_truth["status"][404] == 221
    assert int(recs["bytes"].sum()) == nasa_truth["bytes"] == 482000467
    assert not recs["latency_ms"].any() and not recs["geo"].any() and not recs["device"].any()

    by = names_by_kind(names)
    assert len(names) == len(set(names["id"].tolist()))  # each name once
    users, res, svcs = by[wire.NameKind.USER], by[wire.NameKind.RESOURCE], by[wire.NameKind.SERVICE]
    assert set(users.values()) == nasa_truth["hosts"] and len(users) == 2365
    # NAME carries at most 54 bytes; the id is the hash of the whole path
    assert set(res.values()) == {p[:54] for p in nasa_truth["paths"]} and len(res) == 1746
    assert set(res) == {lp.stable_id(p) for p in nasa_truth["paths"]}
    assert set(svcs.values()) == set(nasa_truth["services"])
    assert len(np.unique(recs["user"])) == 2365
    # every id in the records is named, and the names hash back to the ids
    assert set(np.unique(recs["user"]).tolist()) == set(users)
    assert set(np.unique(recs["resource"]).tolist()) == set(res)
    assert set(np.unique(recs["service"]).tolist()) == set(svcs)
    assert all(lp.stable_id(s) == i for i, s in users.items())

    svc_counts = Counter(svcs[s] for s in recs["service"].tolist())
    assert svc_counts == nasa_truth["services"]
    # 8076 "/shuttle/..." plus one "//shuttle/missions/missions.html"
    assert svc_counts["images"] == 13172 and svc_counts["shuttle"] == 8077

    # record by record against a few rows, counted by hand from the text
    for k in (0, 1, 12345, 30968):
        host, _, t, _, url, status, nbytes = rows[k][:7]
        r = recs[k]
        assert users[int(r["user"])] == host
        assert int(r["resource"]) == lp.stable_id(url.split("?")[0])
        assert int(r["ts_us"]) == int(t) * 1_000_000 and int(r["status"]) == int(status)
        assert int(r["bytes"]) == (int(nbytes) if nbytes not in ("", "-") else 0)
    assert users[int(recs[0]["user"])] == "pppa006.compuserve.com"
    assert res[int(recs[0]["resource"])] == "/images/launch-logo.gif"

    # the service of a known URL: /shuttle/countdown/ (302 requests to it in this file)
    cd = recs[recs["resource"] == lp.stable_id("/shuttle/countdown/")]
    assert len(cd) == sum(1 for r in rows if r[4] == "/shuttle/countdown/") == 302
    assert set(cd["service"].tolist()) == {lp.service_id("shuttle")}
    ksc = recs[recs["resource"] == lp.stable_id("/ksc.html")]
    assert len(ksc) > 0 and set(ksc["service"].tolist()) == {lp.service_id("root")}


def test_nasa_batches_announce_each_name_once(nasa_truth):
    batches = list(lp.iter_batches(str(NASA), "nasa", batch_size=1000))
    assert [len(b) for b in batches] == [1000] * 30 + [969]
    assert [b.stats.parsed for b in batches] == [1000 * (i + 1) for i in range(30)] + [30969]
    seen: set[tuple[int, int]] = set()
    for b in batches:
        new = {(int(n["kind"]), int(n["id"])) for n in b.names}
        assert len(new) == len(b.names) and not (new & seen)  # only ids new in this batch
        seen |= new
        known = {i for k, i in seen if k == wire.NameKind.USER}
        assert set(b.records["user"].tolist()) <= known  # named no later than first use
        hdr, back = wire.decode(wire.encode(wire.MsgType.REQUEST, b.records, 1, 0))
        assert hdr.count == len(b) and back.tobytes() == b.records.tobytes()
        assert wire.validate(wire.MsgType.REQUEST, b.records, 0, 0, 0) is None
        assert wire.validate(wire.MsgType.NAME, b.names, 0, 0, 0) is None
    assert len(seen) == 2365 + 1746 + len(nasa_truth["services"])


def test_nasa_from_lines_without_header_and_bad_fields():
    lines = [
        "pppa006.compuserve.com\t-\t807256800\tGET\t/images/launch-logo.gif\t200\t1713\t\t",
        "vcc7.langara.bc.ca\t-\t807256804\tGET\t/shuttle/missions/missions.html\t200\t-\t\t",
        "vcc7.langara.bc.ca\t-\tnoon\tGET\t/x.html\t200\t5\t\t",  # bad_timestamp
        "vcc7.langara.bc.ca\t-\t807256805\tGET\t/x.html\tOK\t5\t\t",  # bad_status
        "vcc7.langara.bc.ca\t-\t807256805\tGET\t/x.html\t200\tlots\t\t",  # bad_bytes
        "vcc7.langara.bc.ca\t-\t807256806",  # unparseable
        "",  # blank
        "\t-\t807256807\tGET\t/x.html\t200\t5\t\t",  # missing_field
        "h\t-\t807256808.25\tHEAD\t/htbin/wais.pl?x\t304\t\t\t",
    ]
    recs, names, stats = lp.read_log(lines, "nasa")
    assert stats.lines == 9 and stats.parsed == 3
    assert stats.skipped == {"bad_timestamp": 1, "bad_status": 1, "bad_bytes": 1,
                             "unparseable": 1, "blank": 1, "missing_field": 1}
    assert recs["ts_us"].tolist() == [807256800_000000, 807256804_000000, 807256808_250000]
    assert recs["bytes"].tolist() == [1713, 0, 0]
    assert recs["status"].tolist() == [200, 200, 304]
    assert recs["resource"][2] == lp.stable_id("/htbin/wais.pl")
    assert recs["service"].tolist() == [lp.service_id(s) for s in ("images", "shuttle", "htbin")]


# ------------------------------------------------------------------------------- CLF

CLF_LINES = [
    # Apache common
    '127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326',
    # Apache combined, query string
    '192.168.1.20 - - [28/Jul/2006:10:27:10 -0300] "GET /cgi-bin/try/?q=1 HTTP/1.0" 200 3395 '
    '"http://192.168.1.3/" "Mozilla/5.0 (X11; U; Linux i686)"',
    # nginx combined, bytes 0, IPv6 client
    '2001:db8::1 - - [17/May/2015:08:05:32 +0000] "GET /downloads/product_1 HTTP/1.1" 304 0 '
    '"-" "Debian APT-HTTP/1.3 (0.8.16~exp12ubuntu10.21)"',
    # Apache escapes a quote inside the request line
    '10.0.0.5 - - [01/Jan/2024:00:00:01 +0100] "GET /search/q\\"x\\" HTTP/1.1" 404 512 "-" "curl/8"',
    # absolute-form target, '-' bytes
    '10.0.0.6 - - [01/Jan/2024:00:00:02 +0000] "GET http://example.com/api/v1/items?id=3 HTTP/1.1"'
    ' 200 - "-" "-"',
    # malformed:
    '203.0.113.9 - - [17/May/2015:10:05:03 +0000] "\\x16\\x03\\x01\\x00\\xa5\\x01\\x00" 400 166 '
    '"-" "-"',  # TLS hello on port 80 -> bad_request
    '10.0.0.7 - - [31/Feb/2024:00:00:00 +0000] "GET / HTTP/1.1" 200 1',  # bad_timestamp
    '10.0.0.7 - - [01/Foo/2024:00:00:00 +0000] "GET / HTTP/1.1" 200 1',  # bad_timestamp
    '10.0.0.8 - - [01/Jan/2024:00:00:00 +0000] "GET / HTTP/1.1" - 1',  # bad_status
    '10.0.0.8 - - [01/Jan/2024:00:00:00 +0000] "GET / HTTP/1.1" 200 many',  # bad_bytes
    '10.0.0.9 - - [01/Jan/2024:00:00:00 +0000] "GET / HTTP/1.1',  # truncated: unparseable
    'Sat Jan 01 00:00:00 2024 [error] client denied by server configuration',  # unparseable
    "   ",  # blank
]


def test_clf_and_combined():
    recs, names, stats = lp.read_log(CLF_LINES, "clf")
    assert stats.lines == len(CLF_LINES) and stats.parsed == 5 == len(recs)
    assert stats.skipped == {"bad_request": 1, "bad_timestamp": 2, "bad_status": 1,
                             "bad_bytes": 1, "unparseable": 2, "blank": 1}
    assert recs["ts_us"].tolist() == [
        utc_us(2000, 10, 10, 13, 55, 36, offset_h=-7), utc_us(2006, 7, 28, 10, 27, 10, offset_h=-3),
        utc_us(2015, 5, 17, 8, 5, 32), utc_us(2024, 1, 1, 0, 0, 1, offset_h=1),
        utc_us(2024, 1, 1, 0, 0, 2)]
    assert recs["ts_us"][0] == 971211336 * 1_000_000
    assert recs["status"].tolist() == [200, 200, 304, 404, 200]
    assert recs["bytes"].tolist() == [2326, 3395, 0, 512, 0]
    assert not recs["latency_ms"].any()
    by = names_by_kind(names)
    assert [by[wire.NameKind.USER][int(u)] for u in recs["user"]] == [
        "127.0.0.1", "192.168.1.20", "2001:db8::1", "10.0.0.5", "10.0.0.6"]
    assert [by[wire.NameKind.RESOURCE][int(r)] for r in recs["resource"]] == [
        "/apache_pb.gif", "/cgi-bin/try/", "/downloads/product_1", '/search/q\\"x\\"',
        "/api/v1/items"]
    assert [by[wire.NameKind.SERVICE][int(s)] for s in recs["service"]] == [
        "root", "cgi-bin", "downloads", "search", "api"]


HAPROXY_LINES = [
    # default "option httplog", syslog prefix, captured headers
    "Feb  6 12:14:14 localhost haproxy[14389]: 10.0.1.2:33317 [06/Feb/2009:12:14:14.655] "
    "http-in static/srv1 10/0/30/69/109 200 2750 - - ---- 1/1/1/1/0 0/0 {1wt.eu} {} "
    '"GET /index.html HTTP/1.1"',
    # haproxy 2.x, TLS frontend (~), no captures, query string
    "Jan 27 21:52:56 lb1 haproxy[3098]: 192.168.50.1:61818 [27/Jan/2021:21:52:56.086] "
    'fe_main~ be_api/s1 0/0/1/12/15 201 517 - - ---- 1/1/0/0/0 0/0 "POST /api/orders?x=1 HTTP/1.1"',
    # "option logasap": +Tt and +bytes
    "Jan 27 21:52:57 lb1 haproxy[3098]: 192.168.50.2:61819 [27/Jan/2021:21:52:57.001] "
    'fe_main be_dl/s2 0/0/1/3/+2500 200 +1048576 - - ---- 3/3/1/1/0 0/0 "GET /dl/big.iso HTTP/1.1"',
    # no syslog prefix (stdout logging)
    "10.0.1.9:40000 [27/Jan/2021:21:53:00.500] fe_main be_servers/s1 2/0/0/7/9 404 120 - - ---- "
    '1/1/0/0/0 0/0 "GET /missing HTTP/1.1"',
    # "option httplog clf": ms and the 5th timer (Ta) at the end
    "Feb  6 12:14:15 localhost haproxy[14389]: 10.0.1.3 - - [06/Feb/2009:11:14:15 +0000] "
    '"GET /images/logo.png HTTP/1.1" 304 0 "" "" 51234 123 "http-in" "static" "srv1" '
    '1 0 0 3 42 "----" 2 2 1 1 0 0 0 "" "" "" ""',
    # malformed:
    "Feb  6 12:14:16 localhost haproxy[14389]: 10.0.1.4:33320 [06/Feb/2009:12:14:16.001] "
    'http-in api/<NOSRV> 0/-1/-1/-1/0 -1 0 - - CR-- 1/1/0/0/0 0/0 "GET /api/x HTTP/1.1"',  # -1
    "Feb  6 12:14:17 localhost haproxy[14389]: 10.0.1.5:33321 [06/Feb/2009:12:14:17.002] "
    'http-in http-in/<NOSRV> -1/-1/-1/-1/5 400 187 - - PR-- 1/1/0/0/0 0/0 "<BADREQ>"',
    # tcplog line: no request at all
    "Feb  6 12:14:18 localhost haproxy[14389]: 10.0.1.6:33322 [06/Feb/2009:12:14:18.003] "
    "tcp-in db/pg1 0/0/5007 212 -- 0/0/0/0/3 0/0",
    "Feb  6 12:14:19 localhost haproxy[14389]: Proxy http-in started.",
]


def test_haproxy_httplog_and_clf_mode():
    recs, names, stats = lp.read_log(HAPROXY_LINES, "clf")
    assert stats.lines == 9 and stats.parsed == 5
    assert stats.skipped == {"bad_status": 1, "bad_request": 1, "unparseable": 2}
    assert recs["ts_us"].tolist() == [
        utc_us(2009, 2, 6, 12, 14, 14, 655000), utc_us(2021, 1, 27, 21, 52, 56, 86000),
        utc_us(2021, 1, 27, 21, 52, 57, 1000), utc_us(2021, 1, 27, 21, 53, 0, 500000),
        utc_us(2009, 2, 6, 11, 14, 15, 123000)]
    assert recs["latency_ms"].tolist() == [109.0, 15.0, 2500.0, 9.0, 42.0]
    assert recs["status"].tolist() == [200, 201, 200, 404, 304]
    assert recs["bytes"].tolist() == [2750, 517, 1048576, 120, 0]
    by = names_by_kind(names)
    assert [by[wire.NameKind.USER][int(u)] for u in recs["user"]] == [
        "10.0.1.2", "192.168.50.1", "192.168.50.2", "10.0.1.9", "10.0.1.3"]
    assert [by[wire.NameKind.RESOURCE][int(r)] for r in recs["resource"]] == [
        "/index.html", "/api/orders", "/dl/big.iso", "/missing", "/images/logo.png"]
    assert [by[wire.NameKind.SERVICE][int(s)] for s in recs["service"]] == [
        "root", "api", "dl", "root", "images"]


def test_clf_mixed_flavours_in_one_file(tmp_path):
    p = tmp_path / "access.log"
    p.write_text("\n".join(CLF_LINES + HAPROXY_LINES) + "\n")
    recs, _, stats = lp.read_log(p, "clf")
    assert stats.lines == len(CLF_LINES) + len(HAPROXY_LINES)
    assert stats.parsed == len(recs) == 10
    assert stats.lines == stats.parsed + stats.skipped_total


def test_garbage_bytes_are_counted_not_fatal(tmp_path):
    good = CLF_LINES[1].encode()
    latin1_agent = (b'10.1.1.1 - - [01/Jan/2024:00:00:00 +0000] "GET /caf\xe9/menu HTTP/1.1" 200 '
                    b'10 "-" "Mozilla \xa9 1998"')
    rng = np.random.default_rng(7)
    junk = [rng.integers(0, 256, n, dtype=np.uint8).tobytes().replace(b"\n", b"")
            for n in (1, 40, 300)]
    p = tmp_path / "mixed.log"
    p.write_bytes(b"\n".join([junk[0], good, b"\xff\xfe\x00\x00", latin1_agent, junk[1],
                              junk[2], good]) + b"\n")
    recs, names, stats = lp.read_log(p, "clf")
    assert stats.lines == 7
    assert stats.parsed == 3 == len(recs)  # two good lines and the latin-1 one
    assert 2 <= stats.undecodable <= 5  # \xff\xfe..., the latin-1 line, maybe random junk
    assert stats.skipped_total == 4
    res = names_by_kind(names)[wire.NameKind.RESOURCE]
    assert res[int(recs["resource"][1])] == "/caf\ufffd/menu"
    assert wire.validate(wire.MsgType.NAME, names, 0, 0, 0) is None


def test_str_lines_that_cannot_be_utf8_are_counted():
    lines = ['10.0.0.1 - - [01/Jan/2024:00:00:00 +0000] "GET /a/\ud800 HTTP/1.1" 200 1',
             "\udcff\t-\t807256800\tGET\t/x\t200\t1", CLF_LINES[0]]
    recs, names, stats = lp.read_log(lines, "clf")
    assert stats.parsed == 1 and stats.skipped == {"bad_encoding": 1, "unparseable": 1}
    assert recs["user"].tolist() == [lp.stable_id("127.0.0.1")]
    assert names_by_kind(names)[wire.NameKind.USER] == {lp.stable_id("127.0.0.1"): "127.0.0.1"}
    csv_lines = ["timestamp,user,resource,service", "1,u1,/a/b,\udfff", "2,u2,/a/b,"]
    recs, names, stats = lp.read_log(csv_lines, "csv")  # a bad explicit service
    assert stats.skipped == {"bad_encoding": 1} and recs["user"].tolist() == [lp.stable_id("u2")]
    assert sorted(wire.name_str(n) for n in names) == ["/a/b", "a", "u2"]
    assert wire.validate(wire.MsgType.NAME, names, 0, 0, 0) is None


def test_gzip_input(tmp_path):
    p = tmp_path / "access.log.gz"
    with gzip.open(p, "wt") as f:
        f.write("\n".join(CLF_LINES) + "\n")
    recs, _, stats = lp.read_log(p, "clf")
    assert stats.parsed == 5 and len(recs) == 5
    bad = tmp_path / "broken.log.gz"
    bad.write_bytes(p.read_bytes()[:30])
    with pytest.raises(errors.LogFormatError, match="cannot read"):
        lp.read_log(bad, "clf")


# ------------------------------------------------------------------------------- CSV

def test_csv_numeric_and_iso_timestamps(tmp_path):
    p = tmp_path / "reqs.csv"
    p.write_text(
        "\ufefftimestamp,user,resource,service,latency_ms,bytes,status,extra\n"
        "1700000000,alice,/cart/add?sku=1,,12.5,300,200,x\n"
        "1700000000.25,bob,/Search/q,,,,,\n"
        "2023-11-14T22:13:20Z,carol,/a/b,Checkout,3,0,201,\n"
        "2023-11-14T23:13:20.5+01:00,dave,sku-42,catalog,0.25,7,503,\n"
        "2023-11-14 22:13:21,erin,/,,,,,\n"
        '1700000001,"smith, frank","/q/a,b",,1,2,200,\n'
        "1.7e9,gina,/x/y,,,,,\n"
        # bad lines
        "yesterday,hank,/a/b,,,,,\n"
        "1700000002,,/a/b,,,,,\n"
        "1700000002,ivan,/a/b,,slow,,,\n"
        "1700000002,ivan,/a/b,,-3,,,\n"
        "1700000002,ivan,/a/b,,,,1234,\n"
        "1700000002,ivan,/a/b,,,-1,,\n"
        "1700000002,ivan\n"
        "99999999999999999999,ivan,/a/b,,,,,\n"
        "nan,ivan,/a/b,,,,,\n")
    recs, names, stats = lp.read_log(p, "csv")
    assert stats.lines == 16 and stats.parsed == 7
    assert stats.skipped == {"bad_timestamp": 3, "missing_field": 1, "bad_latency": 2,
                             "bad_status": 1, "bad_bytes": 1, "unparseable": 1}
    t0 = 1_700_000_000_000_000
    assert utc_us(2023, 11, 14, 22, 13, 20) == t0
    assert recs["ts_us"].tolist() == [t0, t0 + 250_000, t0, t0 + 500_000, t0 + 1_000_000,
                                      t0 + 1_000_000, 1_700_000_000_000_000]
    assert recs["latency_ms"].tolist() == [12.5, 0.0, 3.0, 0.25, 0.0, 1.0, 0.0]
    assert recs["bytes"].tolist() == [300, 0, 0, 7, 0, 2, 0]
    assert recs["status"].tolist() == [200, 0, 201, 503, 0, 200, 0]
    by = names_by_kind(names)
    assert [by[wire.NameKind.USER][int(u)] for u in recs["user"]] == [
        "alice", "bob", "carol", "dave", "erin", "smith, frank", "gina"]
    assert [by[wire.NameKind.RESOURCE][int(r)] for r in recs["resource"]] == [
        "/cart/add", "/Search/q", "/a/b", "sku-42", "/", "/q/a,b", "/x/y"]
    assert [by[wire.NameKind.SERVICE][int(s)] for s in recs["service"]] == [
        "cart", "search", "Checkout", "catalog", "root", "q", "x"]
    assert recs["service"][2] == lp.service_id("Checkout")


def test_csv_columns_in_any_order():
    lines = ["resource, USER ,timestamp", "/shop/x,u1,10", "/shop/y,u2,11"]
    recs, _, stats = lp.read_log(lines, "csv")
    assert stats.parsed == 2
    assert recs["ts_us"].tolist() == [10_000_000, 11_000_000]
    assert recs["user"].tolist() == [lp.stable_id("u1"), lp.stable_id("u2")]
    assert set(recs["service"].tolist()) == {lp.service_id("shop")}


def test_csv_missing_required_column(tmp_path):
    p = tmp_path / "reqs.csv"
    p.write_text("timestamp,uid,resource\n1700000000,alice,/a\n")
    with pytest.raises(errors.LogFormatError, match="lacks column.*user"):
        next(lp.iter_batches(p, "csv"))


# ------------------------------------------------------------------------------- whole-input errors

@pytest.mark.parametrize("fmt", ["nasa", "clf", "csv"])
def test_empty_file(tmp_path, fmt):
    p = tmp_path / "empty.log"
    p.write_bytes(b"")
    with pytest.raises(errors.LogFormatError, match="empty"):
        lp.read_log(p, fmt)
    p.write_bytes(b"\n  \n\r\n")
    with pytest.raises(errors.LogFormatError, match="empty"):
        lp.read_log(p, fmt)
    with pytest.raises(errors.LogFormatError, match="empty"):
        lp.read_log([], fmt)


def test_unopenable_and_unknown_format(tmp_path):
    with pytest.raises(errors.LogFormatError, match="cannot open"):
        next(lp.iter_batches(tmp_path / "nope.log", "clf"))
    with pytest.raises(errors.LogFormatError, match="cannot open"):
        next(lp.iter_batches(tmp_path, "clf"))  # a directory
    with pytest.raises(errors.LogFormatError, match="unknown log format 'w3c'"):
        next(lp.iter_batches(["x"], "w3c"))
    with pytest.raises(ValueError):
        next(lp.iter_batches(["x"], "clf", batch_size=0))


def test_nasa_header_lacking_a_column():
    with pytest.raises(errors.LogFormatError, match="lacks column.*url"):
        lp.read_log(["host\tlogname\ttime\tmethod\tpath", "h\t-\t1\tGET\t/"], "nasa")


# ------------------------------------------------------------------------------- batching

def test_all_garbage_yields_one_empty_batch_with_final_stats():
    batches = list(lp.iter_batches(["nonsense", "more nonsense", ""], "clf"))
    assert len(batches) == 1
    b = batches[0]
    assert len(b.records) == 0 and b.records.dtype == wire.REQUEST
    assert len(b.names) == 0 and b.names.dtype == wire.NAME
    assert b.stats.lines == 3 and b.stats.parsed == 0
    assert b.stats.skipped == {"unparseable": 2, "blank": 1}


def test_trailing_garbage_after_full_batch_is_reported():
    lines = CLF_LINES[:2] + ["junk", "junk"]
    batches = list(lp.iter_batches(lines, "clf", batch_size=2))
    assert [len(b) for b in batches] == [2, 0]
    assert batches[0].stats.lines == 2 and batches[-1].stats.lines == 4
    assert batches[-1].stats.skipped == {"unparseable": 2}
    # a batch's stats are a snapshot, not the running object
    assert batches[0].stats.skipped == {}


def test_caller_file_object_is_not_closed():
    f = io.StringIO("\n".join(CLF_LINES[:3]) + "\n")
    recs, _, stats = lp.read_log(f, "clf")
    assert stats.parsed == 3 and not f.closed


# ------------------------------------------------------------------------------- properties

FRAGMENTS = st.sampled_from([
    "127.0.0.1", "-", "frank", "[10/Oct/2000:13:55:36 -0700]", "[06/Feb/2009:12:14:14.655]",
    '"GET /a/b.gif HTTP/1.0"', '"GET', "/a?b", "200", "-1", "2326", '"-"', '""', "10/0/30/69/109",
    "1/1/1/1/0", "0/0", "{x}", "haproxy[1]:", "10.0.0.1:5000", "fe", "be/srv", "----",
    "1700000000", "2023-11-14T22:13:20Z", "\t", ",", '"', "\\", "\x00", "é", "\ufffd",
])
LINE = st.one_of(
    st.text(max_size=200),
    st.lists(st.one_of(FRAGMENTS, st.text(max_size=6)), max_size=25).map(" ".join),
    st.lists(st.one_of(FRAGMENTS, st.text(max_size=6)), max_size=12).map("\t".join),
    st.lists(st.one_of(FRAGMENTS, st.text(max_size=6)), max_size=9).map(",".join),
)
HEADERS = {"clf": [], "nasa": ["\t".join(lp.NASA_COLUMNS)],
           "csv": ["timestamp,user,resource,service,latency_ms,bytes,status"]}


def check_invariants(batches):
    assert batches, "at least one batch"
    last = batches[-1].stats
    assert last.lines == last.parsed + last.skipped_total
    assert set(last.skipped) <= set(lp.REASONS)
    assert sum(len(b) for b in batches) == last.parsed
    for b in batches:
        assert b.records.dtype == wire.REQUEST and b.names.dtype == wire.NAME
        assert wire.validate(wire.MsgType.REQUEST, b.records, 0, 0, 0) is None
        assert wire.validate(wire.MsgType.NAME, b.names, 0, 0, 0) is None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.sampled_from(["clf", "nasa", "csv"]), lines=st.lists(LINE, min_size=1, max_size=20))
def test_arbitrary_text_lines_are_only_counted(fmt, lines):
    lines = HEADERS[fmt] + lines
    try:
        batches = list(lp.iter_batches(lines, fmt, batch_size=3))
    except errors.LogFormatError as e:  # only for input with no non-blank line
        assert all(not ln.strip() for ln in lines) and "empty" in str(e)
        return
    check_invariants(batches)
    assert batches[-1].stats.lines == len(lines) - len(HEADERS[fmt])


@settings(max_examples=150, deadline=None)
@given(fmt=st.sampled_from(["clf", "nasa", "csv"]),
       lines=st.lists(st.binary(max_size=120), min_size=1, max_size=10))
def test_arbitrary_byte_lines_are_only_counted(fmt, lines):
    lines = [h.encode() for h in HEADERS[fmt]] + lines
    try:
        batches = list(lp.iter_batches(lines, fmt))
    except errors.LogFormatError as e:
        assert "empty" in str(e)
        return
    check_invariants(batches)
