"""Bearer-token auth with scopes: `jobs:read`, `jobs:write`, `classify`.

Tokens are compared by SHA-256 (settings hold only hashes). A missing or unknown token
is 401, a token without the route's scope is 403, and each message says which.
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request

from service.settings import Scope, ServiceSettings, TokenSpec, hash_token

ANONYMOUS = "anonymous"


class Authenticator:
    def __init__(self, settings: ServiceSettings):
        self.disabled = settings.auth_disabled
        self.classify_open = settings.classify_open
        self.tokens: list[TokenSpec] = settings.all_tokens()

    def owner(self, authorization: str | None, scope: Scope) -> str:
        """The token's name when it may use `scope`; HTTPException 401/403 otherwise."""
        if self.disabled or (scope == "classify" and self.classify_open):
            return ANONYMOUS
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
        if scope not in spec.scopes:
            raise HTTPException(403, f"token {spec.name!r} lacks scope {scope!r} (it has: {', '.join(spec.scopes)})")
        return spec.name

    def dependency(self, scope: Scope):
        """A FastAPI dependency that returns the caller's name for routes needing `scope`."""

        def check(request: Request) -> str:
            return self.owner(request.headers.get("authorization"), scope)

        return check
