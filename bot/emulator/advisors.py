"""The emulator's people: sales advisors who read the app messages the emulator delivered to them and act on
their leads the way people do, through Lianyi's own interfaces.

Each advisor has an :class:`AdvisorProfile`: how long after a lead's card arrives they accept it (or never), and
how long after accepting they write to the customer (or never). They watch ``counters.app_messages``: a textcard
whose link ends in ``/leads/<id>`` names one lead; a digest card (link to ``/leads``) makes them open their list
(``GET /api/leads?status=assigned``) and take every lead waiting there. They accept with
``POST /api/leads/<id>/accept`` (a bearer staff token), and "write to the customer" in the way the chat archive
would report it: a staff message (``sender_type`` staff, source ``archive``) posted to ``/ingest/messages``,
which Lianyi turns into the lead's first contact. When the customer is not yet their contact in the emulated
world (a transfer or an invite is still pending) they cannot chat with them, so they phone instead and press
"contacted" (``POST /api/leads/<id>/contacted``).

Time is the emulator's clock (``state.now()``), so a virtual clock moves the people too. :meth:`EmulatedPeople.step`
does what is due now and returns; :meth:`EmulatedPeople.run` steps until told to stop, waiting on the stop event
between steps. Everything they did is in :attr:`EmulatedPeople.actions`, in order. :func:`draw_profiles` gives a
deterministic (seeded) mix for demos and benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bot.emulator.counters import AppMessageDelivered
from bot.emulator.state import EmulatorState
from scrm.errors import LianyiError

log = logging.getLogger(__name__)

LEAD_LINK = re.compile(r"/leads/(\d{1,18})(?:[/?#]|$)")
DIGEST_LINK = re.compile(r"/leads/?(?:[?#]|$)")
NEW_LEAD_TITLE = "新线索："
DEFAULT_REPLY = "您好，我是门店的销售顾问，看到您在了解我们的车型，方便的话我给您详细介绍一下，也可以约个时间来店试驾。"
REQUEST_TIMEOUT = 10.0
ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class AdvisorProfile:
    """How one person behaves: ``accept_after`` seconds after a lead's card arrived they accept it (None: never);
    ``reply_after`` seconds after accepting they write to the customer (None: never)."""

    accept_after: float | None = 5.0
    reply_after: float | None = 5.0
    reply_text: str = DEFAULT_REPLY

    @property
    def accepts(self) -> bool:
        return self.accept_after is not None


NEVER_ACCEPTS = AdvisorProfile(accept_after=None, reply_after=None)


def draw_profiles(
    userids: Iterable[str],
    *,
    seed: int,
    never_share: float = 0.1,
    silent_share: float = 0.1,
    accept_within: tuple[float, float] = (1.0, 20.0),
    reply_within: tuple[float, float] = (1.0, 10.0),
) -> dict[str, AdvisorProfile]:
    """A seeded mix: ``never_share`` of the people never accept, ``silent_share`` accept but never write to the
    customer, the rest accept and write after uniform delays (tenths of a second) in the given ranges."""
    rng = random.Random(seed)
    people = sorted(set(userids))
    rng.shuffle(people)
    never = round(len(people) * never_share)
    silent = round(len(people) * silent_share)
    profiles: dict[str, AdvisorProfile] = {}
    for index, userid in enumerate(people):
        if index < never:
            profiles[userid] = NEVER_ACCEPTS
            continue
        accept = round(rng.uniform(*accept_within), 1)
        reply = None if index < never + silent else round(rng.uniform(*reply_within), 1)
        profiles[userid] = AdvisorProfile(accept_after=accept, reply_after=reply)
    return dict(sorted(profiles.items()))


@dataclass(frozen=True, slots=True)
class LeadCard:
    """One textcard an app message carried: ``lead_id`` when it links one lead, None for a digest."""

    msgid: str
    userid: str
    title: str
    url: str
    lead_id: int | None
    at: float

    @property
    def is_new_lead(self) -> bool:
        return self.title.startswith(NEW_LEAD_TITLE)


def read_card(message: AppMessageDelivered) -> LeadCard | None:
    """The lead card in an app message, or None when it carries none (another kind of message)."""
    if message.msgtype != "textcard":
        return None
    card = message.body.get("textcard")
    if not isinstance(card, dict):
        return None
    url, title = str(card.get("url") or ""), str(card.get("title") or "")
    found = LEAD_LINK.search(url)
    if found is not None:
        return LeadCard(message.msgid, message.touser, title, url, int(found.group(1)), message.at)
    if DIGEST_LINK.search(url):
        return LeadCard(message.msgid, message.touser, title, url, None, message.at)
    return None


@dataclass(frozen=True, slots=True)
class LianyiEndpoints:
    """Where the people reach Lianyi: base URLs of processes with the edge role (used in turn), a staff token
    for a userid, and the ingest token of ``/ingest/messages``."""

    bases: Sequence[str]
    staff_token: Callable[[str], str]
    ingest_token: str

    def base_for(self, lead_id: int) -> str:
        return self.bases[lead_id % len(self.bases)].rstrip("/")


@dataclass(frozen=True, slots=True)
class PersonAction:
    """One thing a person did: ``kind`` accept | review | message | contacted; ``outcome`` changed, unchanged,
    or the error code Lianyi answered (e.g. wrong_state when the lead was taken away first)."""

    userid: str
    lead_id: int | None
    kind: str
    at: float
    outcome: str
    external_userid: str = ""


@dataclass(order=True, slots=True)
class _Plan:
    due: float
    order: int
    kind: str = field(compare=False)  # accept | review | reply
    userid: str = field(compare=False)
    lead_id: int | None = field(compare=False)
    external_userid: str = field(compare=False, default="")


class LeadRefused(LianyiError):
    """Lianyi answered an action with an error (kept as the action's outcome)."""

    def __init__(self, code: str, status: int) -> None:
        super().__init__(f"{status} {code}")
        self.code = code


class EmulatedPeople:
    """The advisors of an emulated corp (see the module docstring)."""

    def __init__(
        self,
        state: EmulatorState,
        endpoints: LianyiEndpoints,
        http: aiohttp.ClientSession,
        profiles: Mapping[str, AdvisorProfile],
        *,
        poll_seconds: float = 0.05,
    ) -> None:
        if not endpoints.bases:
            raise ValueError("the people need at least one Lianyi base URL")
        self.state = state
        self.endpoints = endpoints
        self.http = http
        self.profiles = dict(profiles)
        self.poll_seconds = poll_seconds
        self.cards: list[LeadCard] = []
        self.actions: list[PersonAction] = []
        self._read = 0  # app messages looked at so far
        self._plans: list[_Plan] = []
        self._order = itertools.count()
        self._taken: set[tuple[str, int]] = set()  # (userid, lead_id) whose accept is planned or done
        self._messages = itertools.count(1)

    @property
    def busy(self) -> bool:
        """Whether something is still planned (an accept or a reply not yet due)."""
        return bool(self._plans)

    def did(self, kind: str, outcome: str = "changed") -> list[PersonAction]:
        return [a for a in self.actions if a.kind == kind and a.outcome == outcome]

    async def run(self, stop: asyncio.Event) -> None:
        """Step until ``stop`` is set, looking again every ``poll_seconds``."""
        while not stop.is_set():
            await self.step()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_seconds)

    async def step(self) -> int:
        """Read the app messages delivered since the last step, then do what is due; returns actions done."""
        self._read_new_cards()
        done = 0
        while self._plans and self._plans[0].due <= self.state.now():
            plan = heapq.heappop(self._plans)
            await self._carry_out(plan)
            done += 1
        return done

    # ---- reading -------------------------------------------------------------------------------------------

    def _read_new_cards(self) -> None:
        delivered = self.state.counters.app_messages
        fresh, self._read = delivered[self._read :], len(delivered)
        for message in fresh:
            card = read_card(message)
            if card is None:
                continue
            self.cards.append(card)
            profile = self.profiles.get(card.userid)
            if profile is None or profile.accept_after is None:
                continue
            if card.lead_id is None:
                self._plan(card.at + profile.accept_after, "review", card.userid, None)
            elif card.is_new_lead:
                self._plan_accept(card.userid, card.lead_id, card.at + profile.accept_after)

    def _plan(self, due: float, kind: str, userid: str, lead_id: int | None, external_userid: str = "") -> None:
        heapq.heappush(self._plans, _Plan(due, next(self._order), kind, userid, lead_id, external_userid))

    def _plan_accept(self, userid: str, lead_id: int, due: float) -> None:
        if (userid, lead_id) in self._taken:
            return
        self._taken.add((userid, lead_id))
        self._plan(due, "accept", userid, lead_id)

    # ---- acting --------------------------------------------------------------------------------------------

    async def _carry_out(self, plan: _Plan) -> None:
        try:
            if plan.kind == "review":
                await self._review(plan.userid)
            elif plan.kind == "accept":
                assert plan.lead_id is not None
                await self._accept(plan.userid, plan.lead_id)
            else:
                assert plan.lead_id is not None
                await self._reply(plan.userid, plan.lead_id, plan.external_userid)
        except LeadRefused as exc:
            self._record(plan.userid, plan.lead_id, plan.kind, exc.code, plan.external_userid)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("an emulated advisor could not reach Lianyi", extra={"userid": plan.userid, "error": str(exc)})
            self._record(plan.userid, plan.lead_id, plan.kind, "unreachable", plan.external_userid)

    def _record(self, userid: str, lead_id: int | None, kind: str, outcome: str, external_userid: str = "") -> None:
        self.actions.append(PersonAction(userid, lead_id, kind, self.state.now(), outcome, external_userid))

    async def _review(self, userid: str) -> None:
        """A digest arrived: open the list of waiting leads and take each of them now."""
        base = self.endpoints.bases[0].rstrip("/")
        body = await self._call("GET", f"{base}/api/leads?status=assigned", userid)
        leads = [lead for lead in body.get("leads", []) if lead.get("advisor_userid") == userid]
        self._record(userid, None, "review", "changed")
        for lead in leads:
            self._plan_accept(userid, int(lead["id"]), self.state.now())

    async def _accept(self, userid: str, lead_id: int) -> None:
        base = self.endpoints.base_for(lead_id)
        body = await self._call("POST", f"{base}/api/leads/{lead_id}/accept", userid, json_body={})
        lead = body.get("lead") or {}
        external_userid = str(lead.get("external_userid") or "")
        self._record(userid, lead_id, "accept", "changed" if body.get("changed") else "unchanged", external_userid)
        profile = self.profiles[userid]
        if profile.reply_after is not None and external_userid:
            self._plan(self.state.now() + profile.reply_after, "reply", userid, lead_id, external_userid)

    async def _reply(self, userid: str, lead_id: int, external_userid: str) -> None:
        if (external_userid, userid) in self.state.follows:
            await self._message(userid, lead_id, external_userid)
            return
        base = self.endpoints.base_for(lead_id)
        body = await self._call("POST", f"{base}/api/leads/{lead_id}/contacted", userid, json_body={})
        self._record(userid, lead_id, "contacted", "changed" if body.get("changed") else "unchanged", external_userid)

    async def _message(self, userid: str, lead_id: int, external_userid: str) -> None:
        """Write to the customer in a single chat, as the chat archive reports it to Lianyi."""
        record = {
            "msgid": f"emu-{self.state.corp_id}-{userid}-{next(self._messages)}",
            "source": "archive",
            "sent_at": self.state.now(),
            "chat_type": "single",
            "external_userid": external_userid,
            "userid": userid,
            "sender_type": "staff",
            "msgtype": "text",
            "text": self.profiles[userid].reply_text,
        }
        base = self.endpoints.base_for(lead_id)
        headers = {"Authorization": f"Bearer {self.endpoints.ingest_token}"}
        answer = await self._send("POST", f"{base}/ingest/messages", headers, [record])
        self._record(userid, lead_id, "message", "changed" if answer.get("stored") else "unchanged", external_userid)

    async def _call(
        self, method: str, url: str, userid: str, *, json_body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.endpoints.staff_token(userid)}"}
        return await self._send(method, url, headers, json_body)

    async def _send(self, method: str, url: str, headers: dict[str, str], body: Any) -> dict[str, Any]:
        """One request (retried on a broken connection); the JSON answer, or :class:`LeadRefused`."""
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                async with self.http.request(method, url, headers=headers, json=body, timeout=timeout) as response:
                    answer = await response.json(content_type=None)
                    if response.status >= 400:
                        code = answer.get("error", "error") if isinstance(answer, dict) else "error"
                        raise LeadRefused(str(code), response.status)
                    return answer if isinstance(answer, dict) else {}
            except aiohttp.ClientConnectionError:
                if attempt == ATTEMPTS:
                    raise
        raise AssertionError("unreachable")
