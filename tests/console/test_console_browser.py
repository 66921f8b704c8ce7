"""Signing in to the console as a person does, in Debian's Chromium through Playwright: the login page at 375 px
(WeCom on a phone) and 1024 px, a wrong password, the right one, the home page, sign-out. Nothing may be wider
than the window. Screenshots go to ``LIANYI_SCREENSHOT_DIR`` when set (docs/screenshots/ is made that way), else
to the test's temporary folder."""

from __future__ import annotations

import os
from pathlib import Path

from playwright.async_api import Page, async_playwright

from scrm.models import UserRole
from tests.conftest import create_sqlite_database, make_settings
from tests.console.console_support import console
from tests.web_support import PASSWORD, add_user

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


async def _fits(page: Page, width: int) -> None:
    scroll_width = await page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= width, f"the page is {scroll_width} px wide in a {width} px window"


async def test_signing_in_through_the_page(tmp_path: Path) -> None:
    shots = Path(os.environ.get("LIANYI_SCREENSHOT_DIR") or tmp_path)
    settings = make_settings(database_url=await create_sqlite_database(tmp_path / "console.db"))
    async with console(settings) as c, async_playwright() as playwright:
        await add_user(
            c.runtime.session_factory,
            "wangfang",
            UserRole.MANAGER.value,
            dealer_code="BJ001",
            staff_userid="m1",
            display_name="王芳",
        )
        base = str(c.client.make_url("/console/login"))
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            for width in (375, 1024):
                page = await browser.new_page(viewport={"width": width, "height": 760})
                await page.goto(base)
                assert await page.title() == "登录 · 涟漪运营后台"
                await _fits(page, width)
                await page.screenshot(path=str(shots / f"console-login-{width}.png"), full_page=True)
                await page.fill("#username", "wangfang")
                await page.fill("#password", "not the password")
                await page.click("button[type=submit]")
                assert "用户名或密码错误，或账号已停用" in await page.inner_text("[role=alert]")
                assert await page.input_value("#username") == "wangfang"
                await page.fill("#password", PASSWORD)
                await page.click("button[type=submit]")
                await page.wait_for_url("**/console/")
                text = await page.inner_text("main")
                for shown in ("你好，王芳", "经销商经理", "北京一店（BJ001）", "当前"):
                    assert shown in text, shown
                await _fits(page, width)
                await page.screenshot(path=str(shots / f"console-home-{width}.png"), full_page=True)
                await page.click("text=退出登录")
                await page.wait_for_url("**/console/login")
                await page.goto(base.removesuffix("login"))
                assert page.url.endswith("/console/login")  # signed out: the home sends you to the login page
                await page.close()
        finally:
            await browser.close()
