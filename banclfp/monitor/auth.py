"""Who may read the monitor: accounts (argon2 hashes), sessions that expire, wrong passwords slowed down.

The account file and the hashing are argon2-cffi's (a well-kept library, never our own hash);
sessions and the wrong-password limit are pure, with the clock passed in, so that tests drive
time. Sessions live in memory only: a restarted monitor asks everyone to log in again, and no
session secret is ever written to disk.
"""

from __future__ import annotations

import json
import re
import secrets
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from banclfp.infra import storage

USERS_FILE = "users.json"
USER_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
"""An account name: letters, digits, . _ -, 1..64 characters (it appears in logs and on the page)."""
MIN_PASSWORD_CHARS = 10

SESSION_IDLE_S = 30 * 60  # a session unused this long ends (a desk left open)
SESSION_MAX_S = 12 * 3600  # and every session ends after a working day, used or not
MAX_SESSIONS = 1000  # bounded: a flood of logins cannot grow the monitor's memory without end

FAILURE_WINDOW_S = 60.0
FAILURES_ALLOWED = 5  # the 6th wrong password within FAILURE_WINDOW_S is slowed down
SLOW_DOWN_S = 2.0  # how long such an answer is held back (and no password is checked meanwhile)

_hasher = PasswordHasher()  # argon2id with the library's current parameters


class AccountError(ValueError):
    """A name or password that cannot make an account; str(err) is one line in French."""


def hash_password(password: str) -> str:
    """The argon2id hash of `password` (salted; the library's own encoding)."""
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    """Whether `password` matches `stored_hash` (False for a damaged hash, never an exception)."""
    try:
        return _hasher.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


# A hash to check against when the name is unknown: the answer takes as long as for a known name,
# so the timing does not tell which names exist.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


class Accounts:
    """The monitor's accounts: `users.json` in the monitor's own folder ({"users": {name: argon2 hash}})."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / USERS_FILE

    def load(self) -> dict[str, str]:
        """Every account's hash by name ({} when the file is missing or unreadable: nobody gets in)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        users = data.get("users") if isinstance(data, dict) else None
        if not isinstance(users, dict):
            return {}
        return {name: value for name, value in users.items() if isinstance(name, str) and isinstance(value, str)}

    def add(self, name: str, password: str) -> bool:
        """Create or replace the account `name` (True when it is new); AccountError for a bad name or password."""
        if not USER_RE.fullmatch(name):
            raise AccountError(f"nom de compte invalide : {name[:64]!r} (lettres, chiffres, . _ -, 64 au plus)")
        if len(password) < MIN_PASSWORD_CHARS:
            raise AccountError(f"mot de passe trop court : {MIN_PASSWORD_CHARS} caractères au moins")
        users = self.load()
        new = name not in users
        users[name] = hash_password(password)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        storage.atomic_write_json(self.path, {"users": users})
        self.path.chmod(0o600)  # hashes only, but nobody else needs to read them
        return new

    def check(self, name: str, password: str) -> bool:
        """Whether `name` exists and `password` is its password (the file is read afresh: a new account works at once)."""
        stored = self.load().get(name)
        ok = verify_password(stored or _DUMMY_HASH, password)
        return ok and stored is not None


@dataclass
class Session:
    """One logged-in browser."""

    user: str
    created_s: float
    last_seen_s: float


class Sessions:
    """Sessions by their random token; each ends SESSION_IDLE_S after its last use, SESSION_MAX_S after its start."""

    def __init__(self, idle_s: float = SESSION_IDLE_S, max_s: float = SESSION_MAX_S) -> None:
        self.idle_s, self.max_s = idle_s, max_s
        self._sessions: dict[str, Session] = {}

    def open(self, user: str, now_s: float) -> str:
        """A new session's token (the cookie's value) for `user`."""
        self._expire(now_s)
        if len(self._sessions) >= MAX_SESSIONS:  # the oldest goes first
            oldest = min(self._sessions, key=lambda token: self._sessions[token].created_s)
            del self._sessions[oldest]
        token = secrets.token_urlsafe(32)
        self._sessions[token] = Session(user, now_s, now_s)
        return token

    def user(self, token: Optional[str], now_s: float) -> Optional[str]:
        """The user of a live session (its use is noted), None for a missing, unknown or expired one."""
        session = self._sessions.get(token or "")
        if session is None:
            return None
        if self._expired(session, now_s):
            del self._sessions[token or ""]
            return None
        session.last_seen_s = now_s
        return session.user

    def close(self, token: Optional[str]) -> None:
        """End a session (logout)."""
        self._sessions.pop(token or "", None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _expired(self, session: Session, now_s: float) -> bool:
        return now_s - session.last_seen_s > self.idle_s or now_s - session.created_s > self.max_s

    def _expire(self, now_s: float) -> None:
        for token in [t for t, s in self._sessions.items() if self._expired(s, now_s)]:
            del self._sessions[token]


class LoginLimiter:
    """Wrong passwords per account name and per client address: past FAILURES_ALLOWED in FAILURE_WINDOW_S, slowed.

    Both keys count: guessing one account from many addresses, or many accounts from one
    address, is slowed all the same.
    """

    def __init__(self, window_s: float = FAILURE_WINDOW_S, allowed: int = FAILURES_ALLOWED) -> None:
        self.window_s, self.allowed = window_s, allowed
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now_s: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and now_s - times[0] > self.window_s:
            times.popleft()
        return times

    def blocked(self, keys: tuple[str, ...], now_s: float) -> bool:
        """Whether an attempt for these keys comes after FAILURES_ALLOWED wrong ones within the window."""
        return any(len(self._recent(key, now_s)) >= self.allowed for key in keys)

    def failed(self, keys: tuple[str, ...], now_s: float) -> None:
        """Note a wrong password (or an attempt made while blocked) for each key."""
        for key in keys:
            self._recent(key, now_s).append(now_s)
        if len(self._failures) > 10 * MAX_SESSIONS:  # forget keys whose window has passed
            for key in [k for k in self._failures if not self._recent(k, now_s)]:
                del self._failures[key]

    def succeeded(self, keys: tuple[str, ...]) -> None:
        """A right password clears the account's count (not the address's: it may be guessing others)."""
        for key in keys:
            if key.startswith("user:"):
                self._failures.pop(key, None)


def limiter_keys(user: str, client: str) -> tuple[str, ...]:
    """The keys a login attempt counts under: the account name and the client's address."""
    return (f"user:{user.lower()}", f"addr:{client}")
