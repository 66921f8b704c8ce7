"""Sync services: apply WeCom callbacks and API results to our tables, one idempotent event at a time.

Pure domain code on an ``AsyncSession`` (no HTTP, no ``bot`` imports). Each service changes rows and, in
the same transaction, appends the outbox commands the change calls for (``scrm.commands.enqueue``).

- :mod:`scrm.sync.contacts` — contacts, follow relations, their tags, welcome messages
- :mod:`scrm.sync.groups` — customer groups and members
- :mod:`scrm.sync.tags` — the corp tag mirror
- :mod:`scrm.sync.staff` — staff members from the full sync
"""
