"""The inbox contract: every backend (SQL on SQLite, SQL on PostgreSQL, Redis Streams) passes the same tests.

Each inbox instance built by ``backend.make()`` stands for one process; instances share the store.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest

from bot.inbox.base import Delivery, Inbox, InboxItem, InboxUnavailable
from tests.contract.conftest import Backend

SHORT_LEASE = 0.3


def item(key: str, n: int, **payload: object) -> InboxItem:
    return InboxItem(
        dedup_key=f"{key}:{n}",
        ordering_key=key,
        event_type="contact.added",
        corp_id="wwcorp",
        payload={"n": n, **payload},
    )


def keys_of(deliveries: list[Delivery]) -> list[str]:
    return [d.item.dedup_key for d in deliveries]


async def put_all(inbox: Inbox, items: list[InboxItem]) -> None:
    for it in items:
        assert await inbox.put(it) is True


class TestInboxContract:
    async def test_put_is_idempotent_by_dedup_key(self, backend: Backend) -> None:
        inbox = backend.make()
        results = [await inbox.put(item("contact:a", 1)) for _ in range(3)]
        assert results == [True, False, False]

        delivered = await inbox.claim("w1", block_ms=0)
        assert keys_of(delivered) == ["contact:a:1"]
        await inbox.ack(delivered[0])
        assert await inbox.claim("w1", block_ms=0) == []
        assert await inbox.put(item("contact:a", 1)) is False  # still a duplicate after it was handled

    async def test_concurrent_puts_of_one_key_store_it_once(self, backend: Backend) -> None:
        inboxes = [backend.make() for _ in range(5)]  # five edge processes receive the same WeCom retry
        results = await asyncio.gather(*(inbox.put(item("contact:a", 1)) for inbox in inboxes))
        assert sorted(results) == [False, False, False, False, True]
        assert keys_of(await inboxes[0].claim("w1", block_ms=0)) == ["contact:a:1"]

    async def test_one_inbox_told_a_key_twice_at_once_stores_it_once(self, backend: Backend) -> None:
        inbox = backend.make()  # a WeCom retry arrives while the original waits in the same group commit
        results = await asyncio.gather(
            inbox.put(item("contact:a", 1)), inbox.put(item("contact:b", 1)), inbox.put(item("contact:a", 1))
        )
        assert list(results) == [True, True, False]
        assert sorted(keys_of(await inbox.claim("w1", max_items=5, block_ms=0))) == ["contact:a:1", "contact:b:1"]

    async def test_order_per_key_is_preserved(self, backend: Backend) -> None:
        inbox = backend.make()
        keys = ["contact:a", "contact:b", "group:c"]
        await put_all(inbox, [item(k, n) for n in range(5) for k in keys])

        handled: dict[str, list[int]] = defaultdict(list)
        while batch := await inbox.claim("w1", block_ms=0):
            batch_keys = [d.item.ordering_key for d in batch]
            assert len(batch_keys) == len(set(batch_keys)), "two items of one key handed out together"
            for delivery in reversed(batch):  # settle out of order: order must not depend on it
                handled[delivery.item.ordering_key].append(delivery.item.payload["n"])
                await inbox.ack(delivery)
        assert handled == {k: [0, 1, 2, 3, 4] for k in keys}

    async def test_retry_waits_and_blocks_later_items_of_its_key(self, backend: Backend) -> None:
        inbox = backend.make()
        await put_all(inbox, [item("contact:a", 1), item("contact:a", 2), item("contact:b", 1)])
        first = {d.item.dedup_key: d for d in await inbox.claim("w1", block_ms=0)}
        assert set(first) == {"contact:a:1", "contact:b:1"}

        await inbox.retry(first["contact:a:1"], delay=0.5, error="RuntimeError: boom")
        await inbox.ack(first["contact:b:1"])
        assert await inbox.claim("w1", block_ms=0) == []  # a:1 waits for its delay, a:2 waits behind it

        again = await inbox.claim("w1", block_ms=10_000)
        assert keys_of(again) == ["contact:a:1"]
        assert again[0].attempts == 1
        await inbox.ack(again[0])
        after = await inbox.claim("w1", block_ms=0)
        assert keys_of(after) == ["contact:a:2"]
        assert after[0].attempts == 0

    async def test_ack_removes_the_item_for_good(self, backend: Backend) -> None:
        inbox = backend.make(lease_seconds=SHORT_LEASE)
        await inbox.put(item("contact:a", 1))
        (delivery,) = await inbox.claim("w1", block_ms=0)
        await inbox.ack(delivery)
        # Well past the lease, on another process: nothing comes back.
        other = backend.make(lease_seconds=SHORT_LEASE)
        assert await other.claim("w2", block_ms=int(SHORT_LEASE * 2000)) == []

    async def test_backlog_counts_what_is_not_settled(self, backend: Backend) -> None:
        inbox = backend.make(lease_seconds=SHORT_LEASE)
        assert await inbox.backlog() == 0
        for n in range(3):
            await inbox.put(item(f"contact:{n}", n))
        await inbox.put(item("contact:0", 0))  # a duplicate is not counted twice
        assert await inbox.backlog() == 3
        first, second, _ = await inbox.claim("w1", block_ms=0)
        await inbox.ack(first)
        await inbox.dead(second, error="gave up")
        assert await inbox.backlog() == 1

    async def test_dead_item_never_returns_and_frees_its_key(self, backend: Backend) -> None:
        inbox = backend.make(lease_seconds=SHORT_LEASE)
        await put_all(inbox, [item("contact:a", 1), item("contact:a", 2)])
        (first,) = await inbox.claim("w1", block_ms=0)
        await inbox.dead(first, error="ValueError: bad payload")
        (second,) = await inbox.claim("w1", block_ms=0)
        assert second.item.dedup_key == "contact:a:2"
        await inbox.ack(second)
        assert await inbox.claim("w2", block_ms=int(SHORT_LEASE * 2000)) == []

    async def test_item_of_a_vanished_consumer_is_reclaimed_after_the_lease(self, backend: Backend) -> None:
        ghost = backend.make(lease_seconds=SHORT_LEASE)
        alive = backend.make(lease_seconds=SHORT_LEASE)
        await put_all(ghost, [item("contact:a", 1), item("contact:a", 2)])
        (taken,) = await ghost.claim("ghost", block_ms=0)  # …and the ghost process dies holding it
        assert await alive.claim("alive", block_ms=0) == []

        reclaimed = await alive.claim("alive", block_ms=10_000)
        assert keys_of(reclaimed) == ["contact:a:1"]
        assert reclaimed[0].attempts == 1  # the crashed attempt counts
        assert reclaimed[0].item == taken.item
        await alive.ack(reclaimed[0])
        assert keys_of(await alive.claim("alive", block_ms=0)) == ["contact:a:2"]

    async def test_claiming_renews_the_lease_of_held_items(self, backend: Backend) -> None:
        holder = backend.make(lease_seconds=SHORT_LEASE)
        other = backend.make(lease_seconds=SHORT_LEASE)
        await holder.put(item("contact:a", 1))
        (held,) = await holder.claim("holder", block_ms=0)
        for _ in range(6):  # 6 x 100 ms: twice the lease, renewed all along
            await holder.claim("holder", max_items=0, block_ms=0)
            assert await other.claim("other", block_ms=100) == []
        await holder.ack(held)

    async def test_two_consumers_never_hold_the_same_item(self, backend: Backend) -> None:
        seed = backend.make()
        keys = [f"contact:{i}" for i in range(10)]
        await put_all(seed, [item(k, n) for n in range(6) for k in keys])
        total = len(keys) * 6
        in_flight: set[str] = set()
        in_flight_keys: set[str] = set()
        handled: dict[str, list[int]] = defaultdict(list)
        done = asyncio.Event()

        async def consume(inbox: Inbox, name: str) -> None:
            while not done.is_set():
                for delivery in await inbox.claim(name, max_items=4, block_ms=50):
                    it = delivery.item
                    assert it.dedup_key not in in_flight and it.ordering_key not in in_flight_keys
                    in_flight.add(it.dedup_key)
                    in_flight_keys.add(it.ordering_key)
                    await asyncio.sleep(0)  # let the other consumer claim while this one holds the item
                    handled[it.ordering_key].append(it.payload["n"])
                    in_flight.discard(it.dedup_key)
                    in_flight_keys.discard(it.ordering_key)
                    await inbox.ack(delivery)
                if sum(len(v) for v in handled.values()) == total:
                    done.set()

        async with asyncio.timeout(60):
            await asyncio.gather(consume(backend.make(), "w1"), consume(backend.make(), "w2"))
        assert handled == {k: list(range(6)) for k in keys}

    async def test_different_keys_proceed_in_parallel(self, backend: Backend) -> None:
        one, two = backend.make(), backend.make()
        await put_all(one, [item("contact:a", 1), item("contact:a", 2), item("contact:b", 1)])
        assert keys_of(await one.claim("w1", max_items=1, block_ms=0)) == ["contact:a:1"]
        # a:1 is in flight on w1: a:2 must wait, b:1 is free for anyone.
        assert keys_of(await two.claim("w2", max_items=10, block_ms=0)) == ["contact:b:1"]

    async def test_payload_round_trips_unicode(self, backend: Backend) -> None:
        inbox = backend.make()
        payload = {"Content": "您好，想了解一下 ID.4 的落地价 🚗", "MemChangeList": ["wm张三", "wm李四"], "n": 1}
        sent = InboxItem(
            dedup_key="msg:客户-1",
            ordering_key="user:王五",
            event_type="message.app",
            corp_id="ww企业",
            payload=payload,
        )
        await inbox.put(sent)
        (delivery,) = await inbox.claim("w1", block_ms=0)
        assert delivery.item == sent

    async def test_attempts_survive_a_restart(self, backend: Backend) -> None:
        await backend.make().put(item("contact:a", 1))
        for expected in range(3):
            restarted = backend.make()  # a new process each time
            (delivery,) = await restarted.claim(f"w{expected}", block_ms=0)
            assert delivery.attempts == expected
            await restarted.retry(delivery, delay=0, error="boom")

    async def test_unreachable_store_raises_inbox_unavailable(self, backend: Backend) -> None:
        with pytest.raises(InboxUnavailable):
            await backend.make_unreachable().put(item("contact:a", 1))
