"""The world of the lead-handoff end-to-end run: ten dealers in ten cities, five advisors and a manager each, two
brand accounts and a brand operator; 500 customers planned by index, each with the route the handoff rules must
find for them (the test's oracle, written from the rules in ``scrm.leads.routing``'s docstring, not by calling
it); the roster file; the SOP folder with a short SLA; and `lianyi serve` processes sharing PostgreSQL and Redis.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bot.emulator.localstack import LocalStack
from bot.emulator.scenario import AppSpec, CorpSpec, DealerSpec, Scenario, StaffSpec
from bot.emulator.state import EmulatorState
from scrm.channel import build_state
from tests.e2e.serve_env import serve_env

LIANYI = Path(sys.executable).with_name("lianyi")
SHIPPED = Path(__file__).resolve().parents[2] / "sop_templates"
CITIES = ("北京", "上海", "广州", "深圳", "成都", "杭州", "南京", "武汉", "西安", "重庆")
ADVISORS_PER_DEALER = 5
BRAND, POOL_BRAND, OPERATOR = "brand01", "brand02", "ops01"
INGEST_TOKEN = "lead-handoff-e2e-ingest-token-0123456789"
ALWAYS_OPEN = "daily 00:00-24:00"

# the customer's route, by index % 25: 15 of 25 added by an advisor with a dealer state (sticky), 5 by the brand
# account with a dealer state, 2 in a dealer's customer group, 2 who name a dealer's city, 1 with nothing (pool)
STICKY, BRAND_STATE, GROUP, CITY, POOL = "sticky", "brand_state", "group", "city", "pool"
RULE_OF = {STICKY: "state", BRAND_STATE: "state", GROUP: "group", CITY: "city", POOL: "pool"}

HOT_TEXTS = (
    "我想买L7，准备这周下订",
    "这周末能去店里试驾吗",
    "现在下订什么时候能提车",
    "贷款的话首付多少，月供多少",
)  # with the opening line: purchase 20 + purchase 20 + test_drive 18 + delivery 16 + finance 14 = 88 ≥ H (80)

HANDOFF_RULES: dict[str, Any] = {
    "enabled": True,
    "timezone": "Asia/Shanghai",
    "handoff": {"levels": ["H"], "behaviours": ["test_drive_booking", "form"]},
    "routing": {"outside_hours": "wait", "reach": "transfer", "pool_notify": [OPERATOR]},
    "sla": {
        "accept_minutes": 1,
        "contact_minutes": 30,
        "business_hours": False,
        "max_reassign": 2,
        "accept_ladder": [
            {"after": 0, "action": "remind"},
            {"after": 0, "action": "notify_manager"},
            {"after": 0, "action": "reassign"},
        ],
        "contact_ladder": [{"after": 0, "action": "remind"}],
    },
    # one card per lead (no digests) so every card names its lead; the per-member budget stays below WeCom's 30/min
    "notify": {"per_minute": 20, "per_hour": 600, "digest_after": 100},
}


def dealer_code(d: int) -> str:
    return f"LD{d:02d}"


def advisor_id(d: int, a: int) -> str:
    return f"ld{d:02d}_adv{a}"


def manager_id(d: int) -> str:
    return f"ld{d:02d}_mgr"


def scenario(dealers: int) -> Scenario:
    return Scenario(
        corp=CorpSpec(corp_id="ww1ead0ff0e2e00001", name="涟漪汽车"),
        apps=[AppSpec(secret="lead-e2e-app-secret", agent_id=1000002)],
        seed=20261123,
        dealers=[
            DealerSpec(
                code=dealer_code(d),
                name=f"{CITIES[d]}涟漪4S店",
                city=CITIES[d],
                staff=[
                    *(StaffSpec(userid=advisor_id(d, a), name=f"顾问{d}-{a}") for a in range(ADVISORS_PER_DEALER)),
                    StaffSpec(userid=manager_id(d), name=f"经理{d}", position="销售经理"),
                ],
            )
            for d in range(dealers)
        ],
    )


def add_brand_staff(state: EmulatorState) -> None:
    state.add_staff(BRAND, "涟漪汽车官方号", "", position="品牌运营")
    state.add_staff(POOL_BRAND, "涟漪汽车客服号", "", position="品牌运营")
    state.add_staff(OPERATOR, "品牌运营", "", position="品牌运营")


def roster_yaml(dealers: int) -> str:
    staff: list[dict[str, Any]] = []
    for d in range(dealers):
        for a in range(ADVISORS_PER_DEALER):
            staff.append({"userid": advisor_id(d, a), "dealer": dealer_code(d), "role": "顾问", "capacity": 30})
        staff.append({"userid": manager_id(d), "dealer": dealer_code(d), "role": "店长"})
    staff.append({"userid": OPERATOR, "role": "运营"})
    document = {
        "dealers": [
            {
                "code": dealer_code(d),
                "name": f"{CITIES[d]}涟漪4S店",
                "city": CITIES[d],
                "brands": ["涟漪汽车"],
                "models": ["L7", "L9"],
                "opening_hours": ALWAYS_OPEN,
            }
            for d in range(dealers)
        ],
        "staff": staff,
    }
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)


def sop_folder(dest: Path) -> Path:
    """The shipped intent rules (what scores a customer H) with the test's handoff.yaml; no SOP templates."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("intent.yaml", "intent_examples.jsonl"):
        shutil.copy2(SHIPPED / name, dest / name)
    (dest / "handoff.yaml").write_text(yaml.safe_dump(HANDOFF_RULES, allow_unicode=True), "utf-8")
    return dest


@dataclass(frozen=True, slots=True)
class Customer:
    index: int
    external_userid: str
    route: str  # sticky | brand_state | group | city | pool
    dealer: int | None  # the dealer the route leads to (None: the pool)
    added_by: str
    state: str
    hot: str  # "" (stays cold) | "messages" | "booking"

    @property
    def expected_dealer(self) -> str:
        return dealer_code(self.dealer) if self.dealer is not None else ""

    def hot_records(self, sent_at: float) -> list[dict[str, Any]]:
        """What the customer writes: a first line naming their city (city route), then the buying questions."""
        opening = f"我在{CITIES[self.dealer]}，最近打算买车" if self.route == CITY and self.dealer is not None else ""
        texts = [opening, *HOT_TEXTS] if opening else ["最近打算买车", *HOT_TEXTS]
        return [
            {
                "msgid": f"{self.external_userid}-m{n}",
                "source": "archive",
                "sent_at": sent_at + n * 0.001,
                "chat_type": "single",
                "external_userid": self.external_userid,
                "userid": self.added_by,
                "sender_type": "customer",
                "text": text,
            }
            for n, text in enumerate(texts)
        ]


def plan_customers(count: int, dealers: int) -> list[Customer]:
    customers = []
    for i in range(count):
        slot, d = i % 25, i % dealers
        if slot < 15:
            route, adder = STICKY, advisor_id(d, (i // dealers) % ADVISORS_PER_DEALER)
            state = build_state(dealer=dealer_code(d), channel="qr", advisor=adder)
        elif slot < 20:
            route, adder, state = BRAND_STATE, BRAND, build_state(dealer=dealer_code(d), channel="ad")
        elif slot < 22:
            route, adder, state = GROUP, BRAND, build_state(channel="event")
        elif slot < 24:
            route, adder, state = CITY, BRAND, build_state(channel="live")
        else:
            route, adder, state = POOL, POOL_BRAND, ""
        hot = ""  # a third turn hot: the city and pool customers by writing, the group's by booking, others either
        if i % 3 == 0:
            booking = route == GROUP or (route in (STICKY, BRAND_STATE) and (i // 3) % 2 == 0)
            hot = "booking" if booking else "messages"
        customers.append(Customer(i, f"wm_lead_{i:04d}", route, None if route == POOL else d, adder, state, hot))
    return customers


def populate(state: EmulatorState, customers: Sequence[Customer], dealers: int) -> None:
    """The customers as WeCom knows them before the run, and one customer group per dealer (owner: advisor 0)."""
    for c in customers:
        state.add_contact(c.added_by, c.external_userid, name=f"客户{c.index:03d}", state=c.state)
    for d in range(dealers):
        members = [c.external_userid for c in customers if c.route == GROUP and c.dealer == d]
        state.create_group(advisor_id(d, 0), f"{CITIES[d]}车友群", members, chat_id=f"wr_lead_group_{d:02d}")


# ---- processes -------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def lianyi_env(stack: LocalStack, sop_dir: Path, instance: str) -> dict[str, str]:
    return serve_env(
        stack,
        instance,
        SOP_DIR=str(sop_dir),
        SOP_TICK_SECONDS="0.3",
        LEADER_TTL_SECONDS="3",
        INGEST_TOKEN=INGEST_TOKEN,
    )


async def run_cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(LIANYI), *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    return int(proc.returncode or 0), out.decode("utf-8", errors="replace")


async def start_server(env: dict[str, str], port: int, log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as stderr:
        return await asyncio.create_subprocess_exec(
            str(LIANYI),
            "serve",
            "--roles",
            "edge,worker,dispatcher,scheduler",
            "--port",
            str(port),
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )


async def wait_healthy(http: aiohttp.ClientSession, base: str, *, within: float) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            async with http.get(f"{base}/healthz", timeout=aiohttp.ClientTimeout(total=2)) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{base} did not become healthy within {within:.0f} s")
        await asyncio.sleep(0.1)


async def stop_servers(processes: Sequence[asyncio.subprocess.Process]) -> None:
    for proc in processes:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    for proc in processes:
        try:
            async with asyncio.timeout(15):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
