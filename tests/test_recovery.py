"""State that survives: durable ingest, the journal, checkpoints, crash recovery and the
faults of a data folder. Real daemon processes, real LMDB files, real journal files."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bae_core import wire
from daemon.client import EventPublisher

from .conftest import NASA, ROOT, write_config
from .test_daemon import requests, service_names

pytestmark = pytest.mark.slow
NASA_ROWS = 30_969


def run_bae(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "daemon.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_durable_publisher_gets_every_frame_acknowledged_once(daemon):
    with EventPublisher(daemon.durable, durable=True, producer_id=77) as pub:
        for k in range(50):
            pub.send_frame(wire.MsgType.REQUEST, requests(200, seed=k))
        assert pub.wait_acked(30) and pub.unacked == 0 and pub.acked == 50
        # the same frames again (a producer that lost the acknowledgements): not re-applied
        pub.sequence = 40
        for k in range(40, 50):
            pub.send_frame(wire.MsgType.REQUEST, requests(200, seed=k))
        assert pub.wait_acked(30)
    s = daemon.wait_for(lambda s: s["events_accepted"] == 10_000, what="10k accepted")
    time.sleep(0.3)
    s = daemon.stats()
    assert s["events_accepted"] == 10_000 and s["duplicates"] == 10 and s["acks"] == 60


def test_durable_rejection_is_acknowledged_as_rejected(daemon):
    with EventPublisher(daemon.durable, durable=True, producer_id=5) as pub:
        hdr, body = wire.encode(wire.MsgType.REQUEST, requests(10), 5, 0)
        pub.send_raw([hdr, body[:-3]])  # truncated: can never be accepted
        pub._unacked[0] = [hdr, body[:-3]]
        pub.sequence = 1
        assert pub.wait_acked(10) and pub.rejected == 1
    assert daemon.stats()["frames_rejected"] == {"truncated": 1}


def test_sigkill_between_checkpoints_loses_nothing_journaled(start_daemon, tmp_path):
    d = start_daemon({"state": {"checkpoint_interval_s": 3600}}, name="k")
    with EventPublisher(d.durable, durable=True) as pub:
        pub.send_frame(wire.MsgType.NAME, service_names([1], ["web"]))
        for k in range(30):
            pub.send_frame(wire.MsgType.REQUEST, requests(300, services=(1,), seed=k))
        assert pub.wait_acked(30)
    before = d.stats()
    assert before["events_accepted"] == 9000 and before["checkpoints"] == 0
    d.kill()  # no drain, no checkpoint: only the journal has it
    d.launch()
    d.wait_ready()
    after = d.stats()
    assert after["events_accepted"] == 9000 and after["journal_replayed_events"] == 9000
    assert after["users"] == before["users"] and after["names_registered"] == 1
    assert d.get("/v1/services/web")["requests"] == 9000


def test_recovery_after_three_random_sigkills_counts_every_row_once(start_daemon):
    """A real producer replays the NASA log durably while the daemon is SIGKILLed three
    times at random moments and restarted: nothing lost, nothing counted twice."""
    d = start_daemon({"state": {"checkpoint_interval_s": 1.0}}, name="chaos")
    result = {}

    def produce():
        r = run_bae("replay", str(NASA), "--format", "nasa", "--to", d.durable, "--durable",
                    "--speed", "6000", timeout=600)
        result["rc"], result["out"], result["err"] = r.returncode, r.stdout, r.stderr

    producer = threading.Thread(target=produce)
    producer.start()
    rng = random.Random(int(os.environ.get("BAE_CHAOS_SEED", "4")))
    kills = []
    for _ in range(3):
        time.sleep(rng.uniform(0.5, 2.5))
        kills.append(d.stats()["events_accepted"])
        d.kill()
        time.sleep(rng.uniform(0.0, 0.5))
        d.launch()
        d.wait_ready()
    producer.join(timeout=600)
    assert result["rc"] == 0, result["err"]
    out = json.loads(result["out"].strip().splitlines()[-1])
    assert out["sent"] == NASA_ROWS and out["unacked"] == 0 and out["acknowledged"]
    s = d.wait_for(lambda s: s["events_accepted"] >= NASA_ROWS, what="all rows")
    time.sleep(0.5)
    s = d.stats()
    assert s["events_accepted"] == NASA_ROWS, (kills, s)
    assert kills[-1] < NASA_ROWS, "the kills must happen during the replay"
    assert s["users"] == 2365  # distinct hosts in the log
    # and a clean stop and start keeps the same numbers
    assert d.stop() == 0
    d.launch()
    d.wait_ready()
    assert d.stats()["events_accepted"] == NASA_ROWS


def test_replay_from_journal_resends_history(start_daemon):
    a = start_daemon(name="a")
    with EventPublisher(a.durable, durable=True) as pub:
        pub.send_frame(wire.MsgType.NAME, service_names([1, 2], ["web", "api"]))
        for k in range(10):
            pub.send_frame(wire.MsgType.REQUEST, requests(100, services=(1, 2), seed=k))
    a.wait_for(lambda s: s["events_accepted"] == 1000, what="a accepted")
    assert a.stop() == 0
    b = start_daemon(name="b")
    r = run_bae("replay", "--from-journal", str(a.data_dir / "journal"), "--to", b.ingest,
                "--max")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["sent"] == 1000 and out["names_sent"] == 2
    s = b.wait_for(lambda s: s["events_accepted"] == 1000, what="b accepted")
    assert s["names_registered"] == 2
    assert {x["name"] for x in b.get("/v1/services")["services"]} == {"web", "api"}


def test_eviction_folds_idle_users_into_their_segment(start_daemon):
    d = start_daemon({"state": {"user_ttl_s": 0.5}})
    prof = np.zeros(50, wire.PROFILE)
    prof["ts_us"] = time.time_ns() // 1000
    prof["user"] = np.arange(50)
    prof["segment"] = 9
    with EventPublisher(d.ingest) as pub:
        pub.send_frame(wire.MsgType.PROFILE, prof)
        r = requests(500, users=50)
        pub.send_frame(wire.MsgType.REQUEST, r)
    d.wait_for(lambda s: s["events_accepted"] == 550, what="accepted")
    s = d.wait_for(lambda s: s["users_evicted"] == 50, timeout_s=10, what="eviction")
    assert s["users"] == 0 and s["segments"] >= 1


# ---- faults of the data folder --------------------------------------------------------

def start_fails(tmp_path, data_dir, fragment):
    cfg = write_config(tmp_path / "bae.toml", {
        "ingest": {"endpoint": f"ipc://{tmp_path}/in", "durable_endpoint": ""},
        "publish": {"endpoint": f"ipc://{tmp_path}/pub", "snapshot_endpoint":
                    f"ipc://{tmp_path}/snap"},
        "http": {"listen": "127.0.0.1:0"}, "state": {"data_dir": str(data_dir)}})
    r = run_bae("run", "--config", str(cfg), timeout=60)
    assert r.returncode == 2, r.stderr
    assert fragment in r.stderr, r.stderr
    return r


def test_foreign_folder_is_refused_and_left_alone(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "photos.db").write_bytes(b"precious")
    start_fails(tmp_path, data, "holds files BAE did not write")
    assert sorted(p.name for p in data.iterdir()) == ["photos.db"]
    assert (data / "photos.db").read_bytes() == b"precious"


def test_corrupt_lmdb_is_refused_and_not_overwritten(tmp_path):
    data = tmp_path / "data"
    (data / "lmdb").mkdir(parents=True)
    junk = os.urandom(64 << 10)
    (data / "lmdb" / "data.mdb").write_bytes(junk)
    start_fails(tmp_path, data, "cannot open LMDB")
    assert (data / "lmdb" / "data.mdb").read_bytes() == junk


def test_newer_schema_is_refused_and_not_overwritten(start_daemon, tmp_path):
    d = start_daemon(name="old")
    assert d.stop() == 0
    import lmdb

    env = lmdb.open(str(d.data_dir / "lmdb"), max_dbs=4, map_size=1 << 30)
    with env.begin(write=True, db=env.open_db(b"meta")) as txn:
        txn.put(b"schema", b"bae-state/9")
    env.close()
    before = (d.data_dir / "lmdb" / "data.mdb").read_bytes()
    start_fails(tmp_path, d.data_dir, "bae-state/9")
    assert (d.data_dir / "lmdb" / "data.mdb").read_bytes() == before


def test_read_only_folder_is_refused(tmp_path):
    data = tmp_path / "ro"
    data.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(data)],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"cannot mount a read-only tmpfs (run as root): {r.stderr}"
    try:
        start_fails(tmp_path, data, "read-only")
    finally:
        subprocess.run(["umount", "-l", str(data)], capture_output=True)


def test_full_disk_keeps_serving_from_memory_and_recovers(start_daemon, tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"cannot mount a small tmpfs (run the tests as root): {r.stderr}"
    try:
        d = start_daemon({"state": {"data_dir": str(mnt / "data"), "map_size_mb": 1,
                                    "checkpoint_interval_s": 0.5},
                          "journal": {"segment_mb": 1}}, name="full")
        ballast = mnt / "ballast"
        with EventPublisher(d.ingest) as pub:
            with open(ballast, "wb") as f:  # fill the disk
                try:
                    while True:
                        f.write(b"\0" * (64 << 10))
                        f.flush()
                except OSError:
                    pass
            for k in range(40):
                pub.send_frame(wire.MsgType.REQUEST, requests(1024, users=5000, seed=k))
        s = d.wait_for(lambda s: s["events_accepted"] == 40 * 1024, what="in memory")
        health = d.wait_for_health(lambda h: h["status"] == "degraded")
        assert set(health["problems"]) & {"journal", "checkpoint"}
        metrics = d.get("/metrics")
        assert 'bae_degraded{part="journal"} 1.0' in metrics or \
            'bae_degraded{part="checkpoint"} 1.0' in metrics
        assert d.get("/readyz")["ready"]
        ballast.unlink()  # space again: the retries succeed
        d.wait_for_health(lambda h: h["status"] == "ok", timeout_s=20)
        assert d.stop() == 0
        d.launch()
        d.wait_ready()
        assert d.stats()["events_accepted"] == 40 * 1024
        assert d.stop() == 0
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_truncated_lmdb_is_refused_and_not_overwritten(start_daemon, tmp_path):
    d = start_daemon({"journal": {"enabled": False}, "ingest": {"durable_endpoint": ""}},
                     name="trunc")
    with EventPublisher(d.ingest) as pub:
        for k in range(20):
            pub.send_frame(wire.MsgType.REQUEST, requests(1024, users=50_000, seed=k))
    d.wait_for(lambda s: s["events_accepted"] == 20 * 1024, what="accepted")
    assert d.stop() == 0
    mdb = d.data_dir / "lmdb" / "data.mdb"
    data = mdb.read_bytes()
    mdb.write_bytes(data[: len(data) // 3])
    before = mdb.read_bytes()
    r = start_fails(tmp_path, d.data_dir, "LMDB")
    assert "move" in r.stderr  # says what to do
    assert mdb.read_bytes() == before
