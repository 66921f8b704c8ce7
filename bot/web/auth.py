"""Who a web request is: a console session cookie or a staff bearer token, turned into a
:class:`~bot.web.authz.Principal` (what they may do is :mod:`bot.web.authz`).

- The session cookie carries the session id and its MAC under the session key (``id.mac``); the store keeps only
  a digest of the id. HttpOnly, SameSite=Lax, Secure when ``LIANYI_PUBLIC_URL`` is https, no Max-Age beyond the
  session's own lifetime. The user must still be active: disabling a user ends their sessions at once.
- A CSRF token is an HMAC under the CSRF key of the session id (or, before sign-in, of a random pre-login
  cookie); every POST that a cookie authenticates must carry it (form field ``csrf_token`` or header
  ``X-CSRF-Token``).
- Bearer tokens are :mod:`scrm.leads.staff_tokens`; the staff member, and the user linked to them if any, must be
  active.

Keys come from ``LIANYI_SECRET_KEY`` (:mod:`scrm.keys`); the previous key still verifies during a rotation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from datetime import datetime, timedelta

from aiohttp import web
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.settings import Settings, key_ring
from bot.web.authz import Principal, Via, staff_role_as_user_role
from scrm.accounts.sessions import SessionInfo, SessionStore
from scrm.db import SessionFactory
from scrm.keys import KeyPurpose
from scrm.leads.actions import LeadActionError
from scrm.leads.staff_tokens import IssuedToken, issue_token, verify_token
from scrm.models import Dealer, Staff, User

SESSION_COOKIE = "lianyi_session"
LOGIN_COOKIE = "lianyi_login"
CSRF_HEADER = "X-CSRF-Token"
MAC_CHARS = 32
MAX_COOKIE_CHARS = 200


def _mac(key: bytes, purpose: str, value: str) -> str:
    digest = hmac.new(key, f"{purpose}\0{value}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")[:MAC_CHARS]


async def issue_staff_token(
    settings: Settings, session: AsyncSession, staff_userid: str, *, lifetime: timedelta, created_by: str, now: datetime
) -> IssuedToken:
    """A bearer token for ``staff_userid`` signed with the current staff-token key (its row added to ``session``;
    the caller checks that the staff member is active)."""
    key = key_ring(settings).key(KeyPurpose.STAFF_TOKENS)
    return await issue_token(
        session, key, settings.corp_id, staff_userid, lifetime=lifetime, created_by=created_by, now=now
    )


def unauthorized(message_zh: str = "请先登录，或提供有效的访问令牌") -> LeadActionError:
    return LeadActionError("unauthorized", message_zh, 401)


def client_address(request: web.Request) -> str:
    return request.remote or ""


def client_digest(request: web.Request) -> str:
    """A digest of the browser and address a session was made from (stored instead of the address)."""
    text = f"{request.headers.get('User-Agent', '')}\0{client_address(request)}"
    return hashlib.sha256(text.encode("utf-8", errors="replace")).hexdigest()


class WebAuth:
    """Authentication of web requests for one corp."""

    def __init__(
        self, settings: Settings, factory: SessionFactory, sessions: SessionStore, now: Callable[[], datetime]
    ) -> None:
        ring = key_ring(settings)
        self._session_keys = ring.verifying_keys(KeyPurpose.SESSIONS)
        self._csrf_keys = ring.verifying_keys(KeyPurpose.CSRF)
        self._token_keys = ring.verifying_keys(KeyPurpose.STAFF_TOKENS)
        self.corp_id = settings.corp_id
        self.secure_cookies = settings.public_url.startswith("https://")
        self.factory = factory
        self.sessions = sessions
        self.now = now

    # --- cookies and CSRF -----------------------------------------------------------------------------
    def cookie_value(self, session_id: str) -> str:
        return f"{session_id}.{_mac(self._session_keys[0], 'session', session_id)}"

    def session_id_of(self, cookie: str | None) -> str | None:
        """The session id a cookie carries when its MAC is ours (current or previous key); None otherwise."""
        if not cookie or len(cookie) > MAX_COOKIE_CHARS or not cookie.isascii():
            return None
        session_id, _, mac = cookie.rpartition(".")
        if not session_id:
            return None
        matches = [hmac.compare_digest(mac, _mac(key, "session", session_id)) for key in self._session_keys]
        return session_id if any(matches) else None

    def csrf_token(self, binding: str) -> str:
        """The CSRF token of a session id (or a pre-login nonce)."""
        return _mac(self._csrf_keys[0], "csrf", binding)

    def csrf_valid(self, binding: str, offered: str) -> bool:
        if not binding or not offered or not offered.isascii():
            return False
        return any([hmac.compare_digest(offered, _mac(key, "csrf", binding)) for key in self._csrf_keys])

    def set_cookie(self, response: web.StreamResponse, name: str, value: str, max_age: int | None) -> None:
        response.set_cookie(
            name, value, max_age=max_age, path="/", httponly=True, samesite="Lax", secure=self.secure_cookies
        )

    # --- principals -----------------------------------------------------------------------------------
    async def session_of(self, request: web.Request) -> tuple[str, SessionInfo] | None:
        session_id = self.session_id_of(request.cookies.get(SESSION_COOKIE))
        if session_id is None:
            return None
        info = await self.sessions.get(session_id, self.now())
        return (session_id, info) if info is not None else None

    async def from_session(self, request: web.Request) -> Principal | None:
        """The signed-in console user of ``request``, or None (no cookie, ended session, disabled user)."""
        found = await self.session_of(request)
        if found is None:
            return None
        session_id, info = found
        async with self.factory() as session:
            user = await session.get(User, info.user_id)
            if user is None or not user.active:
                return None
            dealer_id = None
            if user.dealer_code:
                statement = select(Dealer.id).where(Dealer.corp_id == self.corp_id, Dealer.code == user.dealer_code)
                dealer_id = (await session.exec(statement)).first()
            staff_userid = None
            if user.staff_userid:
                statement_staff = select(Staff).where(Staff.corp_id == self.corp_id, Staff.userid == user.staff_userid)
                staff = (await session.exec(statement_staff)).first()
                staff_userid = staff.userid if staff is not None and staff.active else None
        return Principal(
            role=user.role,
            corp_id=self.corp_id,
            name=user.username,
            via=Via.SESSION,
            dealer_id=dealer_id,
            staff_userid=staff_userid,
            user_id=user.id,
            session_id=session_id,
        )

    async def from_bearer(self, header: str) -> Principal:
        """The staff member of a bearer token; 401 for a missing, forged, expired or revoked one."""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("缺少访问令牌（Authorization: Bearer …）")
        async with self.factory() as session:
            row = await verify_token(session, self._token_keys, self.corp_id, token.strip(), self.now())
            if row is None:
                raise unauthorized("访问令牌无效、已过期或已吊销，请重新获取")
            statement = select(Staff).where(Staff.corp_id == self.corp_id, Staff.userid == row.staff_userid)
            staff = (await session.exec(statement)).first()
            linked = (await session.exec(select(User).where(User.staff_userid == row.staff_userid))).first()
        if staff is None or not staff.active or (linked is not None and not linked.active):
            raise unauthorized(f"成员 {row.staff_userid} 不存在或已停用")
        return Principal(
            role=staff_role_as_user_role(staff.role),
            corp_id=self.corp_id,
            name=f"staff:{staff.userid}",
            via=Via.TOKEN,
            dealer_id=staff.dealer_id,
            staff_userid=staff.userid,
            user_id=linked.id if linked is not None else None,
        )

    async def api_principal(self, request: web.Request) -> Principal:
        """A bearer token when the request has one, else the session cookie (with its CSRF token on a POST)."""
        header = request.headers.get("Authorization", "")
        if header:
            return await self.from_bearer(header)
        principal = await self.from_session(request)
        if principal is None:
            raise unauthorized()
        if request.method == "POST" and not self.csrf_valid(principal.session_id, request.headers.get(CSRF_HEADER, "")):
            raise LeadActionError("csrf", "页面已过期（CSRF 校验失败），请刷新后重试", 403)
        return principal
