"""Numbered, append-only schema migrations for ledger.sqlite.

Never edit a migration that has shipped: add the next one. ``PRAGMA
user_version`` records how many have been applied.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable


def m001_initial(db: sqlite3.Connection) -> None:
    db.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            model TEXT NOT NULL,
            benchmark TEXT NOT NULL,
            kind TEXT NOT NULL,
            spec TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            result TEXT,
            done INTEGER NOT NULL DEFAULT 0,
            total INTEGER NOT NULL DEFAULT 0,
            heartbeat REAL,
            deadline REAL,
            updated REAL
        );
        CREATE TABLE attempts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            job_id TEXT NOT NULL REFERENCES jobs(id),
            n INTEGER NOT NULL,
            owner TEXT NOT NULL,
            pid INTEGER,
            started REAL NOT NULL,
            ended REAL,
            status TEXT NOT NULL DEFAULT 'running',
            error TEXT,
            log TEXT
        );
        CREATE TABLE cache (
            key TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            model TEXT NOT NULL,
            request TEXT NOT NULL,
            response TEXT NOT NULL,
            created REAL NOT NULL
        );
        """
    )


def m002_attempt_place(db: sqlite3.Connection) -> None:
    """Where each attempt ran: the worker's host and device, and CUDA_VISIBLE_DEVICES.

    Adds only the columns still missing, so a migration cut short by a crash
    completes on the next open.
    """
    have = {row[1] for row in db.execute("PRAGMA table_info(attempts)")}
    for column in ("host", "device", "cuda_visible_devices"):
        if column not in have:
            db.execute(f"ALTER TABLE attempts ADD COLUMN {column} TEXT")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [m001_initial, m002_attempt_place]


def migrate(db: sqlite3.Connection) -> int:
    """Apply the migrations not yet applied; return the schema version."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > len(MIGRATIONS):
        raise RuntimeError(f"ledger schema {version} is newer than this ggufbench knows")
    for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
        with db:
            step(db)
            db.execute(f"PRAGMA user_version = {number}")
    return len(MIGRATIONS)
