"""Optional bearer token for the ``/v1`` routes (``--token`` or ``DXKIT_TOKEN``)."""

from __future__ import annotations

import secrets

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

TOKEN_ENV = "DXKIT_TOKEN"
bearer = HTTPBearer(auto_error=False, description="Set when the server was started with a token")


def require_token(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> None:
    """401 unless the request carries ``Authorization: Bearer <token>`` (when one is set)."""
    expected: str | None = request.app.state.token
    if not expected:
        return
    given = credentials.credentials if credentials is not None else ""
    # Constant-time comparison: response timing must not reveal how much of a guess matched.
    if not secrets.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            status_code=401,
            detail="missing or wrong bearer token; send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
