"""Console sign-in through the real application: the form and its CSRF token, a new session on every sign-in,
one error for every bad credential, throttling, sign-out, the home page and its "sign out everywhere", a disabled
user's sessions, and the cookie's flags."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlmodel import select

from bot.web.auth import LOGIN_COOKIE, SESSION_COOKIE
from scrm.accounts.sessions import SqlSessionStore
from scrm.accounts.throttle import USER_LIMIT
from scrm.db import write_transaction
from scrm.models import User, UserRole, UserSession
from tests.conftest import make_settings
from tests.console.console_support import console, csrf_of
from tests.web_support import PASSWORD, add_user

BAD = "用户名或密码错误，或账号已停用"


async def test_the_login_page_is_a_chinese_form_with_a_csrf_token(database_url: str) -> None:
    async with console(make_settings(database_url=database_url)) as c:
        async with c.client.get("/console/login") as response:
            html = await response.text()
            assert response.status == 200 and response.content_type == "text/html"
            assert response.headers["Cache-Control"] == "no-store"
            set_cookie = response.headers["Set-Cookie"]
        assert '<html lang="zh-CN">' in html and "登录" in html and "用户名" in html and "密码" in html
        assert 'name="username"' in html and 'name="password"' in html and csrf_of(html)
        assert "http://" not in html and "https://" not in html  # nothing from a CDN
        assert LOGIN_COOKIE in set_cookie and "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie
        assert "Secure" not in set_cookie


async def test_signing_in_starts_a_new_session_and_the_home_says_who_you_are(database_url: str) -> None:
    async with console(make_settings(database_url=database_url)) as c:
        factory = c.runtime.session_factory
        await add_user(factory, "wang", UserRole.MANAGER.value, dealer_code="BJ001", staff_userid="m1")
        assert await c.home() == (303, "")
        # session fixation: a session id planted in the browser (here one of another user) is never promoted
        attacker = await add_user(factory, "attacker", UserRole.OPERATOR.value)
        planted, _ = await SqlSessionStore(factory).create(
            attacker, now=datetime.now(UTC), lifetime=timedelta(hours=1), user_agent="", client_digest=""
        )
        csrf = await c.login_form()
        c.client.session.cookie_jar.update_cookies({SESSION_COOKIE: c.runtime_auth_cookie(planted)})
        assert (await c.home())[0] == 200  # the planted cookie is a valid session (of the attacker)
        status, location, _ = await c.login("wang", PASSWORD, csrf=csrf)
        assert (status, location) == (303, "/console/")
        first = c.session_cookie()
        assert first and not first.startswith(planted)
        async with factory() as session:
            attackers = (await session.exec(select(UserSession).where(UserSession.user_id == attacker))).all()
        assert [r.revoked_at is not None for r in attackers] == [True]
        status, html = await c.home()
        assert status == 200
        for text in ("你好，wang 的名字", "经销商经理", "北京一店（BJ001）", "m1", "我的登录会话（1）", "当前"):
            assert text in html, text
        status, _, _ = await c.login("wang", PASSWORD, csrf=csrf)  # the form's token was for one sign-in only
        assert status == 403 and c.session_cookie() == first
        async with factory() as session:
            user = (await session.exec(select(User).where(User.username == "wang"))).one()
            rows = (await session.exec(select(UserSession).where(UserSession.user_id == user.id))).all()
        assert user.last_login_at is not None
        assert [r.revoked_at is None for r in rows] == [True]
        assert all(len(r.id_digest) == 64 and r.id_digest not in first for r in rows)


async def test_every_bad_credential_gets_the_same_answer(database_url: str) -> None:
    async with console(make_settings(database_url=database_url)) as c:
        factory = c.runtime.session_factory
        await add_user(factory, "li", UserRole.OPERATOR.value)
        await add_user(factory, "old", UserRole.OPERATOR.value, active=False)
        await add_user(factory, "nopass", UserRole.OPERATOR.value, password=None)
        for username, password in (("li", "wrong password!"), ("ghost", PASSWORD), ("old", PASSWORD), ("nopass", "")):
            status, _, html = await c.login(username, password)
            assert status == 401 and BAD in html, username
            assert c.session_cookie() == ""
        status, _, html = await c.login("li", PASSWORD, csrf="forged")
        assert status == 403 and "页面已过期" in html and c.session_cookie() == ""
        async with c.client.post("/console/login", data={"username": "li", "password": PASSWORD}) as response:
            assert response.status == 403
        await add_user(factory, "adv", UserRole.ADVISOR.value)
        status, _, html = await c.login("adv", PASSWORD)
        assert status == 403 and "企业微信" in html and c.session_cookie() == ""


async def test_failures_are_throttled_and_a_success_resets_them(database_url: str) -> None:
    async with console(make_settings(database_url=database_url)) as c:
        await add_user(c.runtime.session_factory, "zhao", UserRole.OPERATOR.value)
        for _ in range(USER_LIMIT - 1):
            assert (await c.login("zhao", "not the password"))[0] == 401
        assert (await c.login("zhao", PASSWORD))[0] == 303  # resets the username's count
        c.client.session.cookie_jar.clear()
        for _ in range(USER_LIMIT):
            assert (await c.login("zhao", "not the password"))[0] == 401
        status, _, html = await c.login("zhao", PASSWORD)  # the right password, but too late
        assert status == 429 and "登录失败次数过多，请 15 分钟后再试" in html


async def test_sign_out_and_sign_out_everywhere(database_url: str) -> None:
    async with console(make_settings(database_url=database_url)) as c:
        await add_user(c.runtime.session_factory, "qian", UserRole.ADMIN.value)
        await c.login("qian", PASSWORD)
        _, html = await c.home()
        csrf = csrf_of(html)
        assert (await c.post("/console/logout", "not-the-token")).status == 403
        assert (await c.home())[0] == 200
        response = await c.post("/console/logout", csrf)
        assert (response.status, response.headers["Location"]) == (303, "/console/login")
        assert await c.home() == (303, "")
        await c.login("qian", PASSWORD)
        kept = c.session_cookie()
        c.client.session.cookie_jar.clear()
        await c.login("qian", PASSWORD)  # a second browser
        _, html = await c.home()
        assert "我的登录会话（2）" in html
        assert (await c.post("/console/sessions/revoke", csrf_of(html))).status == 303
        assert await c.home() == (303, "")
        c.client.session.cookie_jar.update_cookies({SESSION_COOKIE: kept})
        assert await c.home() == (303, "")  # the first browser's session ended too


async def test_disabling_a_user_ends_their_sessions_at_once(database_url: str) -> None:
    async with console(make_settings(database_url=database_url)) as c:
        await add_user(c.runtime.session_factory, "sun", UserRole.OPERATOR.value)
        await c.login("sun", PASSWORD)
        assert (await c.home())[0] == 200
        async with write_transaction(c.runtime.session_factory) as session:
            user = (await session.exec(select(User).where(User.username == "sun"))).one()
            user.active = False
        assert await c.home() == (303, "")


async def test_the_session_cookie_is_secure_behind_https(database_url: str) -> None:
    settings = make_settings(database_url=database_url, public_url="https://scrm.example.com")
    async with console(settings) as c:
        await add_user(c.runtime.session_factory, "zhou", UserRole.OPERATOR.value)
        async with c.client.get("/console/login") as page:
            form = {"username": "zhou", "password": PASSWORD, "csrf_token": csrf_of(await page.text())}
            nonce = page.cookies[LOGIN_COOKIE]
        assert nonce["secure"]
        # a Secure cookie is not sent back over the test's plain http, so the pre-login nonce goes by hand
        headers = {"Cookie": f"{LOGIN_COOKIE}={nonce.value}"}
        async with c.client.post("/console/login", data=form, headers=headers, allow_redirects=False) as response:
            assert response.status == 303
            cookie = response.cookies[SESSION_COOKIE]
        assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/"
        assert int(cookie["max-age"]) == 12 * 3600
