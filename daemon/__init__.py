"""BAE's IO layer: sockets, LMDB, HTTP, signals, systemd."""
