"""Unit tests of bae_core.config: schema, validation messages, defaults and fingerprint."""

from __future__ import annotations

import tomllib

import pytest

from bae_core import config
from bae_core.errors import BAEError, ConfigError


def err(doc) -> ConfigError:
    with pytest.raises(ConfigError) as ei:
        config.validate(doc)
    assert isinstance(ei.value, BAEError)
    return ei.value


def test_defaults_validate():
    cfg = config.validate()
    assert cfg == config.validate({}) == config.validate(None)
    assert set(cfg) == set(config.SCHEMA)
    for section, keys in config.SCHEMA.items():
        assert set(cfg[section]) == set(keys)
        for k, key in keys.items():
            assert cfg[section][k] == key.default
            assert isinstance(cfg[section][k], key.type)
    assert cfg.ingest.endpoint == "tcp://127.0.0.1:5555"
    assert cfg.model.bucket_s == 10.0 and cfg.policy.shadow is False


def test_attribute_access_and_override():
    cfg = config.validate({"model": {"bucket_s": 2.5}, "policy": {"shadow": True}})
    assert cfg.model.bucket_s == 2.5 and cfg["model"]["bucket_s"] == 2.5
    assert cfg.policy.shadow is True
    assert cfg.model.alpha == config.SCHEMA["model"]["alpha"].default
    with pytest.raises(KeyError):
        cfg.model.nope


def test_validate_does_not_share_list_default():
    a = config.validate()
    a.ingest.subscribe.append("tcp://127.0.0.1:1")
    assert config.validate().ingest.subscribe == []
    assert config.SCHEMA["ingest"]["subscribe"].default == []


def test_unknown_key_did_you_mean():
    e = err({"model": {"bukcet_s": 1.0}})
    assert e.key == "model.bukcet_s"
    assert "'model.bukcet_s'" in str(e)
    assert "unknown key" in str(e)
    assert "did you mean 'bucket_s'?" in str(e)


def test_unknown_key_without_close_match_lists_keys():
    e = err({"log": {"zzzzzzzz": 1}})
    assert e.key == "log.zzzzzzzz"
    assert "valid keys: level, format" in str(e)


def test_unknown_section_did_you_mean():
    e = err({"polciy": {"tick_s": 1.0}})
    assert e.key == "polciy"
    assert "unknown section" in str(e)
    assert "did you mean 'policy'?" in str(e)


def test_section_must_be_a_table():
    e = err({"model": 3})
    assert e.key == "model" and "table" in str(e)


@pytest.mark.parametrize("section,key,value,typename", [
    ("ingest", "hwm", "1000", "int"),
    ("ingest", "hwm", True, "int"),
    ("ingest", "hwm", 10.0, "int"),
    ("ingest", "hwm", 10.5, "int"),
    ("model", "late_buckets", False, "int"),
    ("model", "bucket_s", "10", "float"),
    ("model", "bucket_s", True, "float"),
    ("policy", "shadow", 1, "bool"),
    ("policy", "shadow", "true", "bool"),
    ("log", "level", 3, "str"),
    ("ingest", "subscribe", "tcp://127.0.0.1:1", "list"),
])
def test_wrong_types_name_the_key(section, key, value, typename):
    e = err({section: {key: value}})
    assert e.key == f"{section}.{key}"
    assert f"'{section}.{key}'" in str(e)
    assert f"expected {typename}" in str(e)


def test_int_accepted_for_float():
    cfg = config.validate({"model": {"bucket_s": 5, "alpha": 1}, "policy": {"headroom": 0}})
    assert cfg.model.bucket_s == 5.0 and type(cfg.model.bucket_s) is float
    assert type(cfg.model.alpha) is float and type(cfg.policy.headroom) is float


@pytest.mark.parametrize("section,key,bad,good", [
    ("ingest", "hwm", 0, 1),
    ("ingest", "max_records_per_frame", (1 << 20) + 1, 1 << 20),
    ("ingest", "max_records_per_frame", 0, 1),
    ("ingest", "max_past_s", -1.0, 0.0),
    ("publish", "heartbeat_s", 0.01, 0.05),
    ("publish", "heartbeat_s", 61.0, 60.0),
    ("model", "bucket_s", 0.001, 0.01),
    ("model", "late_buckets", 65, 64),
    ("model", "alpha", 0.0, 1.0),  # open at 0
    ("model", "alpha", 1.5, 0.01),
    ("model", "beta", -0.1, 0.0),
    ("model", "phi", 1.01, 1.0),
    ("model", "history", 7, 8),
    ("policy", "rps_per_replica", 0.0, 0.001),
    ("policy", "target_utilisation", 0.0, 1.0),
    ("policy", "min_replicas", -1, 0),
    ("policy", "max_replicas", 0, 1),
    ("log", "level", "verbose", "debug"),
    ("log", "format", "xml", "text"),
    ("http", "listen", "8787", "0.0.0.0:8787"),
    ("http", "listen", "host:99999", "host:65535"),
    ("ingest", "endpoint", "127.0.0.1:5555", "inproc://x"),
    ("ingest", "endpoint", "udp://127.0.0.1:5555", "ipc:///tmp/x"),
    ("ingest", "subscribe", ["tcp://127.0.0.1:1", "pgm://x"], ["tcp://127.0.0.1:1"]),
])
def test_ranges_and_checks(section, key, bad, good):
    e = err({section: {key: bad}})
    assert e.key == f"{section}.{key}"
    assert f"fix '{section}.{key}'" in str(e)
    assert config.validate({section: {key: good}})[section][key] == good


def test_min_above_max_replicas():
    e = err({"policy": {"min_replicas": 5, "max_replicas": 4}})
    assert e.key == "policy.min_replicas" and "max_replicas" in str(e)
    cfg = config.validate({"policy": {"min_replicas": 4, "max_replicas": 4}})
    assert cfg.policy.min_replicas == cfg.policy.max_replicas == 4


def test_curve_without_secret_key():
    e = err({"security": {"curve": True}})
    assert e.key == "security.server_secret_key"
    assert "bae keygen" in str(e)
    cfg = config.validate({"security": {"curve": True, "server_secret_key": "/k/server"}})
    assert cfg.security.curve is True


@pytest.mark.parametrize("section,key,endpoint", [
    ("ingest", "endpoint", "tcp://0.0.0.0:5555"),
    ("ingest", "endpoint", "tcp://*:5555"),
    ("publish", "endpoint", "tcp://10.0.0.5:5556"),
    ("publish", "snapshot_endpoint", "tcp://example.com:5557"),
    ("publish", "endpoint", "tcp://[::]:5556"),
])
def test_remote_endpoint_without_curve_refused(section, key, endpoint):
    e = err({section: {key: endpoint}})
    assert e.key == f"{section}.{key}"
    assert "security.curve" in str(e) and "allow_plaintext_remote" in str(e)
    cfg = config.validate({section: {key: endpoint},
                           "security": {"allow_plaintext_remote": True}})
    assert cfg[section][key] == endpoint
    cfg = config.validate({section: {key: endpoint},
                           "security": {"curve": True, "server_secret_key": "k"}})
    assert cfg[section][key] == endpoint


def test_remote_subscribe_endpoint_refused():
    e = err({"ingest": {"subscribe": ["tcp://127.0.0.1:1", "tcp://192.168.1.2:7000"]}})
    assert e.key == "ingest.subscribe" and "security.curve" in str(e)


@pytest.mark.parametrize("endpoint", [
    "tcp://127.0.0.1:5555", "tcp://127.1.2.3:5555", "tcp://localhost:5555",
    "tcp://[::1]:5555", "ipc:///run/bae/in", "ipc://@abstract", "inproc://bae",
])
def test_local_endpoints_allowed(endpoint):
    cfg = config.validate({"ingest": {"endpoint": endpoint, "subscribe": [endpoint]}})
    assert cfg.ingest.endpoint == endpoint


def test_defaults_toml_parses_and_round_trips():
    text = config.defaults_toml()
    doc = tomllib.loads(text)
    assert set(doc) == set(config.SCHEMA)
    assert config.validate(doc) == config.validate()
    for section, keys in config.SCHEMA.items():
        for k, key in keys.items():
            assert f"# {key.doc}" in text
            assert doc[section][k] == key.default


def test_defaults_toml_with_edited_values_validates():
    text = config.defaults_toml().replace("bucket_s = 10.0", "bucket_s = 2")
    cfg = config.validate(tomllib.loads(text))
    assert cfg.model.bucket_s == 2.0


def test_fingerprint_follows_model_only():
    base = config.validate().fingerprint()
    assert isinstance(base, str) and len(base) == 16
    assert config.validate().fingerprint() == base
    assert config.validate({"model": {"alpha": 0.3}}).fingerprint() != base
    assert config.validate({"model": {"bucket_s": 5.0}}).fingerprint() != base
    assert config.validate({"model": {"bucket_s": 5}}).fingerprint() == \
        config.validate({"model": {"bucket_s": 5.0}}).fingerprint()
    assert config.validate({"http": {"listen": "127.0.0.1:9999"}}).fingerprint() == base
    assert config.validate({"log": {"level": "debug"}}).fingerprint() == base


def test_config_error_message_shape():
    e = ConfigError("a.b", "is wrong", "do this")
    assert str(e) == "config key 'a.b': is wrong; do this" and e.key == "a.b"


def test_hostname_that_looks_like_loopback_is_refused():
    e = err({"ingest": {"subscribe": ["tcp://127.attacker.example:5555"]}})
    assert e.key == "ingest.subscribe"


@pytest.mark.parametrize("speed", [1.0, 600.0, 900.0, 6000.0, 20000.0])
def test_demo_config_is_valid_at_any_speed(tmp_path, speed):
    import tomllib

    from daemon.demo import _demo_config

    cfg = config.validate(tomllib.loads(_demo_config(tmp_path, speed, "127.0.0.1:0")
                                        .read_text()))
    assert cfg.model.seasonal_bucket_s == pytest.approx(30 * cfg.model.bucket_s)
