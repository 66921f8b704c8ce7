"""The Redis Streams inbox backend (several processes).

Design
------
* Lanes: one stream per partition, ``crc32(ordering_key) % partitions``, read through one consumer group.
  Every item of an ordering key lands in the same stream, in arrival order.
* ``put`` is one Lua script per item: ``SET dedup NX EX ttl`` then ``XADD``; if the XADD fails the dedup key
  is deleted again, so a refused event is not remembered as seen and WeCom's retry can still get in.
  Concurrent puts go out as one pipeline (one round trip, one pooled connection); each caller is answered
  with its own item's result, only after that item is stored.
* States of a stream entry once the group has read it (it stays in the group's pending list until it is
  acked or dead, then it is XACKed and XDELed):

  - **in flight**: not in the ``delayed`` sorted set; its owner holds it while its idle time is below the
    lease (each claim by the owner resets the idle time of the deliveries it still holds);
  - **waiting**: in ``delayed`` with a score (ms): a retry due at that time, or 0 for an entry that was read
    while an earlier entry of its key was unfinished ("parked").

* Ordering per key: only the oldest unfinished entry of a key (its *head*) can be handed out, and only
  when it is waiting and due. A retried head keeps blocking its key; other keys proceed, on any consumer.
* Claiming is one Lua script over all lanes, so it is atomic: two consumers can never take the same entry
  or two entries of one key. Per lane it (1) reclaims entries of vanished consumers with
  ``XAUTOCLAIM`` (min-idle = lease) and marks them waiting, (2) walks the pending list in id order and
  hands out due heads, (3) reads new entries with ``XREADGROUP … >`` and hands out those whose key is
  free, parking the others. Lanes are visited from a rotating start so no lane starves.
* Attempts live in a hash (``HINCRBY`` at every hand-out), so a crash counts as an attempt and a restart
  does not reset the count.
* Waiting: an empty claim blocks in ``XREAD`` on every lane plus a wake-up stream that ``ack``/``dead``
  append to, bounded by the next retry or lease expiry and ``block_ms``.
* Settling: concurrent acks/deads share one MULTI pipeline (XACK, XDEL, ZREM, HDEL per entry) and one
  wake-up entry, instead of one round trip and one wake-up entry each.
* Every process must use the same ``partitions`` (``LIANYI_INBOX_PARTITIONS``); change it only on a
  drained inbox, or entries in lanes beyond the new count are never read.
* Limits: the pending-list walk looks at ``scan_limit`` entries per lane; entries parked behind more
  than that many blocked entries of their lane wait until the backlog shrinks.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from bot.inbox.base import Delivery, InboxItem, InboxUnavailable, partition_for
from bot.inbox.sql import GroupCommit
from bot.redis_keys import RedisKeys

log = logging.getLogger(__name__)

_FIELDS = ("dedup_key", "ordering_key", "event_type", "corp_id", "payload")

# KEYS: dedup key, stream. ARGV: ttl seconds, then field/value pairs.
_PUT = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return 0
end
local added = redis.pcall('XADD', KEYS[2], '*', unpack(ARGV, 2))
if type(added) == 'table' and added.err then
  redis.call('DEL', KEYS[1])
  return added
end
return 1
"""

# KEYS: delayed zset, attempts hash, wake-up stream, then one stream per visited lane.
# ARGV: group, consumer, now_ms, lease_ms, max_items, scan_limit, lane count n, n lane numbers, held refs…
# Returns {deliveries, next_due_ms or -1, tail ids of the lanes and of the wake-up stream}.
_CLAIM = """
local group, me = ARGV[1], ARGV[2]
local now, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
local want, scan = tonumber(ARGV[5]), tonumber(ARGV[6])
local n = tonumber(ARGV[7])
local delayed, attempts, wake = KEYS[1], KEYS[2], KEYS[3]
local stream_of = {}
for i = 1, n do stream_of[ARGV[7 + i]] = KEYS[3 + i] end

-- renew the leases of what this consumer still holds (in flight and owned by it)
for i = 8 + n, #ARGV do
  local ref = ARGV[i]
  local sep = string.find(ref, '/', 1, true)
  local s = stream_of[string.sub(ref, 1, sep - 1)]
  local id = string.sub(ref, sep + 1)
  if s then
    local info = redis.call('XPENDING', s, group, id, id, 1)[1]
    if info and info[2] == me and not redis.call('ZSCORE', delayed, ref) then
      redis.call('XCLAIM', s, group, me, 0, id, 'JUSTID')
    end
  end
end

local out, taken, next_due = {}, 0, -1
local function due(t)
  if next_due < 0 or t < next_due then next_due = t end
end
local function fields_of(s, id)
  local e = redis.call('XRANGE', s, id, id)[1]
  if e then return e[2] end
  return nil
end
local function key_of(f)
  for j = 1, #f, 2 do
    if f[j] == 'ordering_key' then return f[j + 1] end
  end
  return ''
end
local function hand_out(ref, f)
  local tries = redis.call('HINCRBY', attempts, ref, 1)
  out[#out + 1] = {ref, f, tries - 1}
  taken = taken + 1
end

for i = 1, n do
  if taken >= want then break end
  local lane, s = ARGV[7 + i], KEYS[3 + i]
  -- (1) entries of consumers that stopped renewing: waiting again, due now
  local reclaimed = redis.call('XAUTOCLAIM', s, group, me, lease, '0-0', 'COUNT', scan, 'JUSTID')
  for _, id in ipairs(reclaimed[2]) do
    local ref = lane .. '/' .. id
    if not redis.call('ZSCORE', delayed, ref) then redis.call('ZADD', delayed, 0, ref) end
  end
  for _, id in ipairs(reclaimed[3] or {}) do
    local ref = lane .. '/' .. id
    redis.call('ZREM', delayed, ref)
    redis.call('HDEL', attempts, ref)
  end
  -- (2) the pending list in id order: hand out due heads
  local seen = {}
  for _, p in ipairs(redis.call('XPENDING', s, group, '-', '+', scan)) do
    if taken >= want then break end
    local id, idle = p[1], tonumber(p[3])
    local ref = lane .. '/' .. id
    local f = fields_of(s, id)
    if not f then
      redis.call('XACK', s, group, id)
      redis.call('ZREM', delayed, ref)
      redis.call('HDEL', attempts, ref)
    else
      local k = key_of(f)
      if not seen[k] then
        seen[k] = true
        local score = redis.call('ZSCORE', delayed, ref)
        if not score then
          due(now + math.max(lease - idle, 1))
        elseif tonumber(score) > now then
          due(tonumber(score))
        else
          redis.call('ZREM', delayed, ref)
          redis.call('XCLAIM', s, group, me, 0, id, 'JUSTID')
          hand_out(ref, f)
        end
      end
    end
  end
  -- (3) new entries: hand out those whose key is free, park the rest
  while taken < want do
    local read = redis.call('XREADGROUP', 'GROUP', group, me, 'COUNT', want - taken, 'STREAMS', s, '>')
    if not read or not read[1] or #read[1][2] == 0 then break end
    for _, e in ipairs(read[1][2]) do
      local ref = lane .. '/' .. e[1]
      local k = key_of(e[2])
      if seen[k] then
        redis.call('ZADD', delayed, 0, ref)
      else
        seen[k] = true
        hand_out(ref, e[2])
      end
    end
  end
end

local tails = {}
if taken == 0 and want > 0 then
  for i = 1, n + 1 do
    local s = (i <= n) and KEYS[3 + i] or wake
    local last = redis.call('XREVRANGE', s, '+', '-', 'COUNT', 1)[1]
    tails[i] = last and last[1] or '0-0'
  end
end
return {out, next_due, tails}
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisInbox:
    """The :class:`~bot.inbox.base.Inbox` on Redis Streams; see the module docstring for the design."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: RedisKeys,
        *,
        partitions: int = 16,
        lease_seconds: float = 30,
        dedup_ttl_seconds: int = 7 * 24 * 3600,
        scan_limit: int = 512,
    ) -> None:
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be > 0")
        self._redis = redis
        self._keys = keys
        self.partitions = partitions
        self.lease_seconds = lease_seconds
        self._dedup_ttl = dedup_ttl_seconds
        self._scan_limit = scan_limit
        self._group = keys.inbox_group()
        self._put_script = redis.register_script(_PUT)
        self._claim_script = redis.register_script(_CLAIM)
        self._groups_ready = False
        self._start_lane = 0
        self._held: dict[str, str] = {}  # ref → consumer, for lease renewal
        self._settles: GroupCommit[str, None] = GroupCommit(self._settle_batch)
        self._puts: GroupCommit[tuple[list[str], list[Any]], bool] = GroupCommit(self._put_batch)

    def _stream(self, lane: int) -> str:
        return self._keys.inbox_stream(lane)

    # ---- put -----------------------------------------------------------------------------------------

    async def put(self, item: InboxItem) -> bool:
        lane = partition_for(item.ordering_key, self.partitions)
        fields: list[str] = []
        for name in _FIELDS:
            value = getattr(item, name)
            fields += [name, json.dumps(value, ensure_ascii=False) if name == "payload" else value]
        keys = [self._keys.inbox_dedup(item.dedup_key), self._stream(lane)]
        try:
            return await self._puts.submit((keys, [self._dedup_ttl, *fields]))
        except RedisError as exc:
            raise InboxUnavailable(f"Redis inbox cannot store {item.dedup_key}: {type(exc).__name__}: {exc}") from exc

    async def _put_batch(self, calls: list[tuple[list[str], list[Any]]]) -> list[bool | Exception]:
        """Run the put script once per item, all in one pipeline (no MULTI: each item stands alone)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                await self._put_script(keys=keys, args=args, client=pipe)
            replies = await pipe.execute(raise_on_error=False)
        return [reply if isinstance(reply, Exception) else bool(int(reply)) for reply in replies]

    # ---- claim ---------------------------------------------------------------------------------------

    async def _ensure_groups(self) -> None:
        if self._groups_ready:
            return
        for lane in range(self.partitions):
            try:
                # From id 0: events put before the first worker started are delivered too.
                await self._redis.xgroup_create(self._stream(lane), self._group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups_ready = True

    async def claim(self, consumer: str, *, max_items: int = 64, block_ms: int = 1000) -> list[Delivery]:
        deadline = time.monotonic() + max(block_ms, 0) / 1000
        try:
            await self._ensure_groups()
            while True:
                deliveries, next_due_ms, tails = await self._claim_now(consumer, max_items)
                remaining_ms = int((deadline - time.monotonic()) * 1000)
                if deliveries or max_items <= 0 or remaining_ms <= 0:
                    return deliveries
                wait_ms = remaining_ms
                if next_due_ms >= 0:
                    wait_ms = min(wait_ms, max(next_due_ms - int(time.time() * 1000), 1))
                await self._wait_for_news(tails, wait_ms)
        except RedisError as exc:
            if "NOGROUP" in str(exc):
                self._groups_ready = False  # a lane was deleted under us; recreate on the next claim
            raise InboxUnavailable(f"Redis inbox cannot claim for {consumer}: {type(exc).__name__}: {exc}") from exc

    async def _claim_now(self, consumer: str, max_items: int) -> tuple[list[Delivery], int, dict[str, str]]:
        """One run of the claim script. Returns (deliveries, next due in epoch ms or -1, stream → tail id)."""
        lanes = [(self._start_lane + i) % self.partitions for i in range(self.partitions)]
        self._start_lane = (self._start_lane + 1) % self.partitions
        held = [ref for ref, owner in self._held.items() if owner == consumer]
        keys = [self._keys.inbox_delayed(), self._keys.inbox_attempts(), self._keys.inbox_wakeup()]
        keys += [self._stream(lane) for lane in lanes]
        args: list[Any] = [self._group, consumer, int(time.time() * 1000), int(self.lease_seconds * 1000)]
        args += [max(max_items, 0), self._scan_limit, len(lanes), *lanes, *held]
        raw_out, next_due, raw_tails = await self._claim_script(keys=keys, args=args)
        deliveries = []
        for raw_ref, raw_fields, prior in raw_out:
            ref = _text(raw_ref)
            values = {_text(raw_fields[j]): _text(raw_fields[j + 1]) for j in range(0, len(raw_fields), 2)}
            item = InboxItem(
                dedup_key=values["dedup_key"],
                ordering_key=values["ordering_key"],
                event_type=values["event_type"],
                corp_id=values["corp_id"],
                payload=json.loads(values["payload"]),
            )
            self._held[ref] = consumer
            deliveries.append(Delivery(ref=ref, item=item, attempts=int(prior)))
        streams = [*keys[3:], self._keys.inbox_wakeup()]
        tails = {stream: _text(tail) for stream, tail in zip(streams, raw_tails, strict=False)}
        return deliveries, int(next_due), tails

    async def _wait_for_news(self, tails: dict[str, str], wait_ms: int) -> None:
        """Block until a lane or the wake-up stream gets an entry after ``tails``, or ``wait_ms`` passes."""
        if tails:
            streams: dict[Any, Any] = dict(tails)
            await self._redis.xread(streams, count=1, block=max(wait_ms, 1))

    # ---- settle --------------------------------------------------------------------------------------

    async def ack(self, delivery: Delivery) -> None:
        await self._finish(delivery, "ack")

    async def dead(self, delivery: Delivery, *, error: str) -> None:
        await self._finish(delivery, "dead")

    async def retry(self, delivery: Delivery, *, delay: float, error: str) -> None:
        due_ms = int(time.time() * 1000 + max(delay, 0.0) * 1000)
        self._held.pop(delivery.ref, None)  # settled or not, stop renewing (see _finish)
        try:
            await self._redis.zadd(self._keys.inbox_delayed(), {delivery.ref: max(due_ms, 1)})
        except RedisError as exc:
            raise InboxUnavailable(f"Redis inbox cannot retry {delivery.ref}: {type(exc).__name__}: {exc}") from exc

    async def _finish(self, delivery: Delivery, what: str) -> None:
        # Settled or not, this process stops renewing the lease: if Redis refused, the entry comes back
        # after the lease instead of staying claimed for as long as this process lives.
        self._held.pop(delivery.ref, None)
        try:
            await self._settles.submit(delivery.ref)
        except RedisError as exc:
            raise InboxUnavailable(f"Redis inbox cannot {what} {delivery.ref}: {type(exc).__name__}: {exc}") from exc

    async def _settle_batch(self, refs: list[str]) -> list[Exception | None]:
        """Remove settled entries for good, all in one MULTI pipeline with one wake-up entry."""
        async with self._redis.pipeline(transaction=True) as pipe:
            for ref in refs:
                lane, entry_id = ref.split("/", 1)
                stream = self._stream(int(lane))
                pipe.xack(stream, self._group, entry_id)
                pipe.xdel(stream, entry_id)
                pipe.zrem(self._keys.inbox_delayed(), ref)
                pipe.hdel(self._keys.inbox_attempts(), ref)
            pipe.xadd(self._keys.inbox_wakeup(), {"ref": refs[-1]}, maxlen=64, approximate=True)
            await pipe.execute()
        return [None] * len(refs)

    async def backlog(self) -> int:
        """Entries not yet acked or dead (settled entries are deleted from their stream)."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for lane in range(self.partitions):
                    pipe.xlen(self._stream(lane))
                lengths = await pipe.execute()
        except RedisError as exc:
            raise InboxUnavailable(f"Redis inbox cannot count its backlog: {type(exc).__name__}: {exc}") from exc
        return int(sum(lengths))

    async def close(self) -> None:
        """The Redis client belongs to the caller; nothing of ours stays open."""
        self._held.clear()
