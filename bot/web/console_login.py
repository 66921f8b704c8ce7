"""Console sign-in and sign-out: ``GET/POST /console/login`` and ``POST /console/logout``.

The login form carries a CSRF token bound to a random pre-login cookie. A wrong password, an unknown user and a
disabled user get the same Chinese error (and the same argon2 work, so timing does not tell them apart). Too
many failures for a username or from an address (:mod:`scrm.accounts.throttle`) answer 429 without checking the
password. A successful sign-in always starts a new session (a session id planted before sign-in is never
promoted), clears the username's failures and sets ``last_login_at``. Advisors sign in through WeCom, not here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from datetime import timedelta
from urllib.parse import parse_qs

from aiohttp import web

from bot.edge.body import BodyTooLarge, read_body
from bot.web.auth import LOGIN_COOKIE, SESSION_COOKIE, WebAuth, client_address, client_digest
from bot.web.pages import render, see_other
from scrm.accounts.actors import find_user
from scrm.accounts.passwords import MAX_PASSWORD_CHARS, hash_password, verify_password
from scrm.accounts.throttle import WINDOW, LoginThrottle
from scrm.db import write_transaction
from scrm.models import User, UserRole

log = logging.getLogger(__name__)

LOGIN_PATH = "/console/login"
HOME_PATH = "/console/"
MAX_FORM_BYTES = 8 * 1024
BAD_CREDENTIALS = "用户名或密码错误，或账号已停用"
THROTTLED = f"登录失败次数过多，请 {int(WINDOW.total_seconds() // 60)} 分钟后再试"
EXPIRED_FORM = "页面已过期，请重新输入后登录"
ADVISOR_ELSEWHERE = "销售顾问请在企业微信侧边栏中登录"


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against for unknown users, so they cost the same argon2 work as known ones."""
    return hash_password(secrets.token_urlsafe(24))


async def read_form(request: web.Request) -> dict[str, str]:
    """A urlencoded form of at most ``MAX_FORM_BYTES`` (first value of each field); {} when unreadable."""
    try:
        raw = await read_body(request, MAX_FORM_BYTES)
        fields = parse_qs(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (BodyTooLarge, UnicodeDecodeError, ValueError):
        return {}
    return {name: values[0] for name, values in fields.items() if values}


class ConsoleLogin:
    def __init__(self, auth: WebAuth, throttle: LoginThrottle, *, session_lifetime: timedelta) -> None:
        self._auth = auth
        self._throttle = throttle
        self._lifetime = session_lifetime

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(LOGIN_PATH, self.login_page)
        app.router.add_post(LOGIN_PATH, self.login)
        app.router.add_post("/console/logout", self.logout)

    def _page(self, request: web.Request, *, error: str = "", username: str = "", status: int = 200) -> web.Response:
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        if not (16 <= len(nonce) <= 64 and nonce.isascii() and nonce.isalnum()):
            nonce = secrets.token_hex(16)
        response = render(
            "console_login.html",
            status=status,
            error=error,
            username=username,
            csrf_token=self._auth.csrf_token("login:" + nonce),
        )
        self._auth.set_cookie(response, LOGIN_COOKIE, nonce, max_age=3600)
        return response

    async def login_page(self, request: web.Request) -> web.Response:
        if await self._auth.from_session(request) is not None:
            return see_other(HOME_PATH)
        return self._page(request)

    async def login(self, request: web.Request) -> web.Response:
        form = await read_form(request)
        username = form.get("username", "").strip()[:64]
        password = form.get("password", "")
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        if not nonce or not self._auth.csrf_valid("login:" + nonce, form.get("csrf_token", "")):
            return self._page(request, error=EXPIRED_FORM, username=username, status=403)
        address, now = client_address(request), self._auth.now()
        if await self._throttle.blocked(username, address, now):
            log.warning("console sign-in throttled")
            return self._page(request, error=THROTTLED, username=username, status=429)
        user = await self._check_password(username, password)
        if user is None:
            await self._throttle.record_failure(username, address, now)
            return self._page(request, error=BAD_CREDENTIALS, username=username, status=401)
        await self._throttle.clear_user(username)
        if user.role == UserRole.ADVISOR.value:
            return self._page(request, error=ADVISOR_ELSEWHERE, username=username, status=403)
        return await self._sign_in(request, user)

    async def _check_password(self, username: str, password: str) -> User | None:
        """The active user whose password this is, else None (with the same argon2 work either way)."""
        if not username or not password or len(password) > MAX_PASSWORD_CHARS:
            return None
        async with self._auth.factory() as session:
            user = await find_user(session, username)
        stored = user.password_hash if user is not None and user.password_hash else _dummy_hash()
        matches = await asyncio.to_thread(verify_password, stored, password)
        if user is None or not user.active or not user.password_hash or not matches:
            return None
        return user

    async def _sign_in(self, request: web.Request, user: User) -> web.Response:
        now = self._auth.now()
        assert user.id is not None
        old = self._auth.session_id_of(request.cookies.get(SESSION_COOKIE))
        if old is not None:  # never promote a session id the browser arrived with
            await self._auth.sessions.revoke(old, now)
        async with write_transaction(self._auth.factory) as session:
            row = await session.get(User, user.id)
            if row is not None:
                row.last_login_at = now
                session.add(row)
        session_id, _ = await self._auth.sessions.create(
            user.id,
            now=now,
            lifetime=self._lifetime,
            user_agent=request.headers.get("User-Agent", ""),
            client_digest=client_digest(request),
        )
        log.info("console sign-in", extra={"user_id": user.id})
        response = see_other(HOME_PATH)
        max_age = int(self._lifetime.total_seconds())
        self._auth.set_cookie(response, SESSION_COOKIE, self._auth.cookie_value(session_id), max_age=max_age)
        response.del_cookie(LOGIN_COOKIE, path="/")
        return response

    async def logout(self, request: web.Request) -> web.Response:
        found = await self._auth.session_of(request)
        form = await read_form(request)
        if found is None:
            return see_other(LOGIN_PATH)
        session_id, _ = found
        if not self._auth.csrf_valid(session_id, form.get("csrf_token", "")):
            return render("console_error.html", status=403, message=EXPIRED_FORM)
        await self._auth.sessions.revoke(session_id, self._auth.now())
        response = see_other(LOGIN_PATH)
        response.del_cookie(SESSION_COOKIE, path="/")
        return response
