"""The ``bae`` command."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tomllib
from pathlib import Path

from bae_core import config
from bae_core.errors import BAEError, ConfigError

from . import logs

OVERRIDES = {"data_dir": ("state", "data_dir"), "ingest": ("ingest", "endpoint"),
             "publish": ("publish", "endpoint"), "snapshot": ("publish", "snapshot_endpoint"),
             "http": ("http", "listen")}


def read_toml(path: str | None) -> dict:
    """The TOML document at ``path`` (``{}`` without one); a clear error if unreadable."""
    if not path:
        return {}
    try:
        return tomllib.loads(Path(path).read_text())
    except OSError as e:
        raise ConfigError("--config", f"cannot read {path}: {e.strerror}",
                          "check the path") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("--config", f"{path} is not valid TOML ({e})",
                          "fix the syntax") from e


def load_config(path: str | None, args: argparse.Namespace | None = None) -> config.Config:
    """Read and validate a TOML config (or the embedded defaults); flags override it."""
    doc = read_toml(path)
    for attr, (section, key) in OVERRIDES.items():
        v = getattr(args, attr, None) if args else None
        if v is not None:
            doc.setdefault(section, {})[key] = v
    return config.validate(doc)


def cmd_run(args) -> int:
    import uvloop

    from .server import Daemon

    cfg = load_config(args.config, args)
    logs.setup(cfg.log.level, cfg.log.format)
    uvloop.run(Daemon(cfg).run())
    return 0


def cmd_config(args) -> int:
    if args.defaults:
        print(config.defaults_toml())
        return 0
    cfg = load_config(args.config)
    print(json.dumps(cfg, indent=2))
    return 0


def cmd_keygen(args) -> int:
    import zmq.auth

    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    pub, sec = zmq.auth.create_certificates(str(d), args.name)
    print(json.dumps({"public": pub, "secret": sec}))
    return 0


def cmd_replay(args) -> int:
    from .replay import replay

    if bool(args.file) == bool(args.from_journal):
        raise ConfigError("replay", "give either a log FILE (with --format) or "
                          "--from-journal DIR", "see 'bae replay --help'")
    if args.file and not args.format:
        raise ConfigError("--format", "missing", "say which log format FILE is: nasa, clf "
                          "or csv")
    to = args.to or ("tcp://127.0.0.1:5558" if args.durable else "tcp://127.0.0.1:5555")
    result = replay(args.file or args.from_journal, args.format or "journal", to,
                    speed=None if args.max else args.speed, limit=args.limit,
                    durable=args.durable)
    print(json.dumps(result))
    return 0 if result.get("unacked", 0) == 0 else 1


def cmd_demo(args) -> int:
    from .demo import demo

    return demo(args.trace, speed=args.speed, http=args.http)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bae", description="Behavioral Analytics Engine")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="run the daemon")
    r.add_argument("--config", help="TOML config (default: embedded defaults)")
    r.add_argument("--data-dir", dest="data_dir", help="LMDB state folder")
    r.add_argument("--ingest", help="PULL endpoint for events")
    r.add_argument("--publish", help="PUB endpoint for deltas")
    r.add_argument("--snapshot", help="ROUTER endpoint for snapshots")
    r.add_argument("--http", help="HOST:PORT of the HTTP API")
    r.set_defaults(fn=cmd_run)

    c = sub.add_parser("config", help="check a config, or print the defaults")
    c.add_argument("--config")
    c.add_argument("--defaults", action="store_true")
    c.set_defaults(fn=cmd_config)

    k = sub.add_parser("keygen", help="make a CURVE key pair (NAME.key, NAME.key_secret)")
    k.add_argument("dir")
    k.add_argument("--name", default="server")
    k.set_defaults(fn=cmd_keygen)

    rp = sub.add_parser("replay", help="send an access log, or a journal's history, to the "
                        "daemon as events")
    rp.add_argument("file", nargs="?")
    rp.add_argument("--format", choices=["nasa", "clf", "csv"])
    rp.add_argument("--from-journal", metavar="DIR", help="send the events a journal holds")
    rp.add_argument("--to", help="ingest endpoint (default tcp://127.0.0.1:5555, or the "
                    "durable tcp://127.0.0.1:5558 with --durable)")
    rp.add_argument("--durable", action="store_true", help="wait for the daemon to "
                    "acknowledge every frame as journaled; exit 1 if some never are")
    g = rp.add_mutually_exclusive_group()
    g.add_argument("--speed", type=float, default=1.0, help="replay X times faster than "
                   "the log's own pace")
    g.add_argument("--max", action="store_true", help="as fast as the daemon takes them")
    rp.add_argument("--limit", type=int, help="stop after this many lines")
    rp.set_defaults(fn=cmd_replay)

    d = sub.add_parser("demo", help="daemon + NASA replay + live delta table")
    d.add_argument("--trace", required=True, help="NASA access log (TSV)")
    d.add_argument("--speed", type=float, default=900.0, help="replay speed-up (900: the "
                   "13-hour log in under a minute)")
    d.add_argument("--http", default="127.0.0.1:0")
    d.set_defaults(fn=cmd_demo)
    from .agent_haproxy import add_agent_parser
    from .detect import add_detect_parser
    from .backtest import add_backtest_parser
    from models.lstm import add_train_parser
    from .evaluate import add_eval_forecast_parser
    from .evaluate_markov import add_eval_markov_parser

    add_detect_parser(sub)
    add_backtest_parser(sub)
    add_agent_parser(sub)
    add_train_parser(sub)
    ev = sub.add_parser("eval", help="evaluate the models on a CSV or log").add_subparsers(
        dest="what", required=True)
    add_eval_forecast_parser(ev)
    add_eval_markov_parser(ev)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except BAEError as e:
        logging.getLogger("bae").debug("fatal", exc_info=True)
        print(f"bae: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
