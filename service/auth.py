"""Bearer-token auth with scopes: `jobs:read`, `jobs:write`, `classify`, `admin`.

Tokens are compared by SHA-256 (settings hold only hashes). A missing or unknown token
is 401, a token without the route's scope is 403, and each message says which. `admin`
implies every other scope and widens jobs:* from the caller's own jobs to everyone's.

The tokens file is re-read when it changes (its mtime, size or inode), checked on every
request: removing a line revokes that token on the next request, without a redeploy. A
file that no longer parses revokes every token it held (fail closed) until it is fixed.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
from dataclasses import dataclass

from fastapi import HTTPException, Request

from service.settings import ADMIN, Scope, ServiceSettings, TokenSpec, hash_token

ANONYMOUS = "anonymous"
log = logging.getLogger("presafe.service")


@dataclass(frozen=True)
class Principal:
    """Who calls: the token's name (jobs belong to it) and what it may do."""

    name: str
    admin: bool = False
    max_running_jobs: int | None = None
    max_priority: int = 0


class Authenticator:
    def __init__(self, settings: ServiceSettings):
        self.disabled = settings.auth_disabled
        self.classify_open = settings.classify_open
        self.inline: list[TokenSpec] = list(settings.tokens)
        self.tokens_file = settings.tokens_file
        self._lock = threading.Lock()
        self._file_key: tuple | None = None
        self._file_tokens: list[TokenSpec] = []
        self._reload()

    @property
    def tokens(self) -> list[TokenSpec]:
        self._reload()
        return self.inline + self._file_tokens

    def _reload(self) -> None:
        if not self.tokens_file:
            return
        try:
            st = os.stat(self.tokens_file)
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError as e:
            key = ("missing", str(e))
        if key == self._file_key:
            return
        with self._lock:
            if key == self._file_key:
                return
            try:
                tokens = ServiceSettings(storage_path="/", tokens_file=self.tokens_file).all_tokens()
            except Exception as e:  # noqa: BLE001 - fail closed: a broken file grants nothing
                log.error("presafe: tokens file %s unreadable, its tokens are refused until fixed: %s",
                          self.tokens_file, e)
                tokens = []
            self._file_tokens, self._file_key = tokens, key

    def principal(self, authorization: str | None, scope: Scope) -> Principal:
        """The caller when it may use `scope`; HTTPException 401/403 otherwise."""
        if self.disabled:
            return Principal(ANONYMOUS, admin=True)
        if scope == "classify" and self.classify_open and not authorization:
            return Principal(ANONYMOUS)
        challenge = {"WWW-Authenticate": "Bearer"}
        if not authorization:
            raise HTTPException(401, f"missing bearer token: send 'Authorization: Bearer <token>' (scope {scope})",
                                headers=challenge)
        kind, _, token = authorization.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise HTTPException(401, "malformed Authorization header: expected 'Bearer <token>'", headers=challenge)
        digest = hash_token(token.strip())
        spec = next((t for t in self.tokens if hmac.compare_digest(t.sha256, digest)), None)
        if spec is None:
            raise HTTPException(401, "unknown or revoked token", headers=challenge)
        admin = ADMIN in spec.scopes
        if scope not in spec.scopes and not admin:
            raise HTTPException(403, f"token {spec.name!r} lacks scope {scope!r} (it has: {', '.join(spec.scopes)})")
        return Principal(spec.name, admin, spec.max_running_jobs, spec.max_priority)

    def owner(self, authorization: str | None, scope: Scope) -> str:
        return self.principal(authorization, scope).name

    def dependency(self, scope: Scope):
        """A FastAPI dependency that returns the caller (a Principal) for routes needing `scope`."""

        def check(request: Request) -> Principal:
            return self.principal(request.headers.get("authorization"), scope)

        return check
