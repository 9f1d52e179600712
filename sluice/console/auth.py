"""Signing in to the console: the token once, on a login page; then a session cookie.

A browser cannot send a bearer header when it loads a page, so the login page exchanges the token for a
cookie that is HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it) and Secure
when the console serves TLS. The cookie holds an expiry and an HMAC of it keyed by the token, never the
token: changing the token signs every session out. A bearer header is accepted too, for scripts.

>>> cookie = session_cookie("s3cret", now_s=1000.0, lifetime_s=60)
>>> signed_in("s3cret", cookie=cookie, authorization=None, now_s=1030.0)
True
>>> signed_in("s3cret", cookie=cookie, authorization=None, now_s=1061.0)  # expired
False
>>> signed_in("other", cookie=cookie, authorization=None, now_s=1030.0)
False
>>> signed_in("s3cret", cookie=None, authorization="Bearer s3cret", now_s=0.0)
True
>>> safe_next("//evil.example/x"), safe_next("/views?x=1")
('/', '/views?x=1')
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["COOKIE", "safe_next", "session_cookie", "signed_in"]

COOKIE = "sluice_console"
SESSION_S = 12 * 3600
"""How long a sign-in lasts."""


def _mac(token: str, expires: int) -> str:
    return hmac.new(token.encode(), f"sluice-console:{expires}".encode(), hashlib.sha256).hexdigest()


def session_cookie(token: str, *, now_s: float, lifetime_s: int = SESSION_S) -> str:
    expires = int(now_s) + lifetime_s
    return f"{expires}.{_mac(token, expires)}"


def signed_in(token: str, *, cookie: str | None, authorization: str | None, now_s: float) -> bool:
    if authorization is not None and hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode()):
        return True
    if not cookie or "." not in cookie:
        return False
    expires, _, mac = cookie.partition(".")
    if not expires.isdigit() or int(expires) < now_s:
        return False
    return hmac.compare_digest(mac.encode(), _mac(token, int(expires)).encode())


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this console, never another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
