"""The signed-in console home ``GET /console/``: who you are, your role and dealer, your live sessions, and
``POST /console/sessions/revoke`` to sign out of every one of them. Without a session both send you to the login
page; a POST needs the session's CSRF token."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from aiohttp import web

from bot.web.auth import SESSION_COOKIE, WebAuth
from bot.web.authz import may_use_console
from bot.web.console_login import EXPIRED_FORM, LOGIN_PATH, read_form
from bot.web.pages import render, see_other
from scrm.accounts.permissions import ROLE_NAMES_ZH
from scrm.accounts.sessions import session_digest
from scrm.models import Dealer, User, UserRole

CHINA = ZoneInfo("Asia/Shanghai")
NOT_FOR_YOU = "您的账号不能使用运营后台"


def _shown(at: datetime | None) -> str:
    return at.astimezone(CHINA).strftime("%Y-%m-%d %H:%M") if at is not None else ""


class ConsoleHome:
    def __init__(self, auth: WebAuth) -> None:
        self._auth = auth

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/console/", self.home)
        app.router.add_get("/console", self.to_home)
        app.router.add_post("/console/sessions/revoke", self.revoke_mine)

    async def to_home(self, request: web.Request) -> web.Response:
        return see_other("/console/")

    async def home(self, request: web.Request) -> web.Response:
        principal = await self._auth.from_session(request)
        if principal is None:
            return see_other(LOGIN_PATH)
        if not may_use_console(principal) or principal.user_id is None:
            return render("console_error.html", status=403, message=NOT_FOR_YOU)
        now = self._auth.now()
        async with self._auth.factory() as session:
            user = await session.get(User, principal.user_id)
            dealer = await session.get(Dealer, principal.dealer_id) if principal.dealer_id is not None else None
            if user is None:
                return see_other(LOGIN_PATH)
        current = session_digest(principal.session_id)
        sessions = [
            {
                "current": info.id_digest == current,
                "created": _shown(info.created_at),
                "last_seen": _shown(info.last_seen_at),
                "expires": _shown(info.expires_at),
                "user_agent": info.user_agent,
            }
            for info in await self._auth.sessions.of_user(principal.user_id, now)
        ]
        return render(
            "console_home.html",
            display_name=user.display_name or user.username,
            username=user.username,
            role_name=ROLE_NAMES_ZH.get(UserRole(user.role), user.role),
            dealer=f"{dealer.name or dealer.code}（{dealer.code}）" if dealer is not None else user.dealer_code,
            staff_userid=principal.staff_userid or "",
            last_login=_shown(user.last_login_at),
            sessions=sessions,
            csrf_token=self._auth.csrf_token(principal.session_id),
        )

    async def revoke_mine(self, request: web.Request) -> web.Response:
        principal = await self._auth.from_session(request)
        form = await read_form(request)
        if principal is None:
            return see_other(LOGIN_PATH)
        if not self._auth.csrf_valid(principal.session_id, form.get("csrf_token", "")):
            return render("console_error.html", status=403, message=EXPIRED_FORM)
        if principal.user_id is None:
            return see_other(LOGIN_PATH)
        await self._auth.sessions.revoke_user(principal.user_id, self._auth.now())
        response = see_other(LOGIN_PATH)
        response.del_cookie(SESSION_COOKIE, path="/")
        return response
