"""The stop ledger: every id sent to ``stop``, in flight or counted, in SQLite (the standard
library's; a file with ``stop_ledger``, else in memory).

Why a database and not a JSON file: a reservation must be on disk before its stop call leaves
and its outcome recorded when the call returns, each atomically, so that a kill at any point
leaves either the old or the new state. SQLite gives that (transactions, a write-ahead log,
``synchronous=FULL``), refuses a file that is not a database, and with ``locking_mode=
EXCLUSIVE`` keeps a second process off the same file: one instance acts.

One table, one row per id sent (an id stopped again after ``remember_seconds`` gets a new row):

- ``in_flight``: reserved, its stop call not returned. A row found so at open was left by a
  process that died during its call: it becomes ``unknown``, counted from the time it is found
  (no earlier than the stop it may have caused), so a crash may cost a stop but never adds one.
- ``stopped`` (the API said so) and ``unknown`` (the outcome could not be read): both count
  against the window and are remembered. An id the API lists as not stopped is deleted.

Rows older than both the window and the memory are deleted at every reservation, so the file
holds at most about ``max_per_window * (remember / window + 1)`` rows; ``max_page_count``
caps it besides (:data:`MAX_PAGES`).

Every failure is a :class:`LedgerUnavailable` with a short reason; the caller fails closed.
The caller holds its own lock around every call (one connection, used from many threads).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

SCHEMA_VERSION = 1
# 32 MiB at 4 KiB pages (far above any policy's rows: a bound on a runaway), and a write-ahead log
# cut back to 8 MiB after each checkpoint: together well inside the chart's 64 MiB volume
MAX_PAGES = 8192
WAL_BYTES = 8 * 2**20
BUSY_MILLISECONDS = 1000
COUNTED = ("stopped", "unknown")


class LedgerUnavailable(Exception):
    def __init__(self, reason: str, detail: str):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")


def _reason(err: Exception) -> str:
    """A fixed reason for a label and a log field; the detail goes to the log alone."""
    text = str(err).lower()
    for needle, reason in (("not a database", "corrupt"), ("malformed", "corrupt"), ("locked", "locked"),
                           ("busy", "locked"), ("readonly", "read_only"), ("read-only", "read_only"),
                           ("full", "full"), ("unable to open", "unreadable"), ("disk i/o", "io_error"),
                           ("schema version", "unknown_version")):
        if needle in text:
            return reason
    return "unreadable" if isinstance(err, OSError) else "error"


class StopLedger:
    def __init__(self, path: str | None, window_seconds: float, remember_seconds: float):
        self.path = path
        self.window_seconds, self.remember_seconds = window_seconds, remember_seconds
        self._db: sqlite3.Connection | None = None

    @property
    def durable(self) -> bool:
        return self.path is not None

    @property
    def is_open(self) -> bool:
        return self._db is not None

    def open(self, now: float) -> None:
        """Opens the ledger if it is not open, and turns rows a dead process left in flight into
        counted ``unknown`` ones; raises :class:`LedgerUnavailable`."""
        if self._db is not None:
            return
        try:
            db = sqlite3.connect(self.path or ":memory:", timeout=BUSY_MILLISECONDS / 1000,
                                 isolation_level=None, check_same_thread=False)
        except (sqlite3.Error, OSError) as err:
            raise LedgerUnavailable(_reason(err), str(err)) from None
        try:
            if self.path is not None:
                db.execute("PRAGMA locking_mode=EXCLUSIVE")
                if db.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
                    raise sqlite3.OperationalError("cannot switch to a write-ahead log (locked or read-only)")
                db.execute("PRAGMA synchronous=FULL")
                db.execute(f"PRAGMA journal_size_limit={WAL_BYTES}")
            db.execute(f"PRAGMA max_page_count={MAX_PAGES}")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise sqlite3.DatabaseError(f"unknown schema version {version}")
            with _transaction(db):
                db.execute("CREATE TABLE IF NOT EXISTS stops (cloud TEXT NOT NULL, execution_id TEXT NOT NULL,"
                           " state TEXT NOT NULL, reserved_at REAL NOT NULL, counted_at REAL)")
                db.execute("CREATE INDEX IF NOT EXISTS stops_by_id ON stops (cloud, execution_id)")
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                db.execute("UPDATE stops SET state = 'unknown', counted_at = max(?, reserved_at)"
                           " WHERE state = 'in_flight'", (now,))
            db.execute("PRAGMA quick_check").fetchall()
        except (sqlite3.Error, OSError) as err:
            db.close()
            raise LedgerUnavailable(_reason(err), str(err)) from None
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def taken(self, keys: Iterable[tuple[str, str]], now: float) -> dict[tuple[str, str], str]:
        """Of ``keys``, those in flight (``in_flight``) or counted within the memory (``stopped_before``)."""
        found: dict[tuple[str, str], str] = {}
        for cloud, execution_id in keys:
            rows = self._query("SELECT state FROM stops WHERE cloud = ? AND execution_id = ?"
                               " AND (state = 'in_flight' OR counted_at > ?)",
                               (cloud, execution_id, now - self.remember_seconds))
            if rows:
                found[(cloud, execution_id)] = "in_flight" if ("in_flight",) in rows else "stopped_before"
        return found

    def stopped_among(self, cloud: str, execution_ids: list[str], now: float) -> set[str]:
        """Of ``execution_ids``, those counted as stopped (``stopped`` or ``unknown``) within the memory."""
        found: set[str] = set()
        for start in range(0, len(execution_ids), 500):  # well under SQLite's limit of parameters
            chunk = execution_ids[start:start + 500]
            rows = self._query(f"SELECT execution_id FROM stops WHERE cloud = ? AND counted_at > ?"
                               f" AND execution_id IN ({','.join('?' * len(chunk))})",
                               (cloud, now - self.remember_seconds, *chunk))
            found.update(row[0] for row in rows)
        return found

    def usage(self, now: float) -> tuple[list[float], int]:
        """When each id counted in the window was counted, and how many are in flight."""
        rows = self._query("SELECT state, counted_at FROM stops WHERE state = 'in_flight' OR counted_at > ?",
                           (now - self.window_seconds,))
        return sorted(t for state, t in rows if state != "in_flight"), sum(s == "in_flight" for s, _ in rows)

    def reserve(self, keys: list[tuple[str, str]], now: float) -> None:
        """Writes ``keys`` as in flight (and forgets what is older than window and memory), durably,
        before their stop call leaves."""
        horizon = now - max(self.window_seconds, self.remember_seconds)
        self._write(lambda db: (
            db.execute("DELETE FROM stops WHERE state != 'in_flight' AND counted_at <= ?", (horizon,)),
            db.executemany("INSERT INTO stops (cloud, execution_id, state, reserved_at) VALUES (?, ?, 'in_flight', ?)",
                           [(cloud, execution_id, now) for cloud, execution_id in keys])))

    def settle(self, cloud: str, outcomes: dict[str, str], now: float) -> None:
        """Records a returned stop call: each id ``stopped``, ``unknown`` or ``not_stopped`` (deleted)."""
        def write(db):
            for execution_id, outcome in outcomes.items():
                where = (cloud, execution_id)
                if outcome in COUNTED:
                    db.execute("UPDATE stops SET state = ?, counted_at = ? WHERE cloud = ? AND execution_id = ?"
                               " AND state = 'in_flight'", (outcome, now, *where))
                else:
                    db.execute("DELETE FROM stops WHERE cloud = ? AND execution_id = ? AND state = 'in_flight'",
                               where)
        self._write(write)

    def _query(self, sql: str, parameters: tuple) -> list[tuple]:
        db = self._connection()
        try:
            return db.execute(sql, parameters).fetchall()
        except sqlite3.Error as err:
            self._broken()
            raise LedgerUnavailable(_reason(err), str(err)) from None

    def _write(self, write) -> None:
        db = self._connection()
        try:
            with _transaction(db):
                write(db)
        except sqlite3.Error as err:
            self._broken()
            raise LedgerUnavailable(_reason(err), str(err)) from None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise LedgerUnavailable("closed", "the ledger is not open")
        return self._db

    def _broken(self) -> None:
        """A file ledger that failed is closed, so the next use opens it afresh (and recovers
        what was in flight); the in-memory one has nothing to reopen."""
        if self.durable:
            self.close()


class _transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, or ``ROLLBACK`` on any error (autocommit connection)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, error, trace):
        if kind is None:
            self.db.execute("COMMIT")
        else:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        return False
