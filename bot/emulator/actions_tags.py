"""Corp tags: the store both paths share, and the admin-console world actions that raise callbacks.

Changes an administrator makes in the console produce ``change_external_tag`` callbacks; the same changes
through the API (add/edit/del_corp_tag) produce none (96361). Deleting a group's last tag deletes the
group, as the API docs state.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.emulator.base import Fields, StateData, WorldError
from bot.emulator.records import CorpTag, TagGroup

EVENT = "change_external_tag"


class TagActions(StateData):
    # ---- the store (no callbacks) ------------------------------------------------------------------

    def put_tag_group(
        self, name: str, tags: Sequence[str] = (), *, order: int = 0, strategy_id: int | None = None
    ) -> TagGroup:
        """Create a tag group (or return the one with this name) and the named tags in it."""
        group = next((g for g in self.tag_groups.values() if g.name == name), None)
        if group is None:
            group = TagGroup(self.new_id("tag_group"), name, order, self.now_int(), strategy_id)
            self.tag_groups[group.group_id] = group
        for index, tag_name in enumerate(tags):
            self.put_tag(group.group_id, tag_name, order=len(tags) - index)
        return group

    def put_tag(self, group_id: str, name: str, *, order: int = 0) -> CorpTag:
        group = self.tag_groups.get(group_id)
        if group is None:
            raise WorldError(f"unknown tag group {group_id!r}")
        existing = next((t for t in group.tags.values() if t.name == name), None)
        if existing is not None:
            return existing
        if sum(1 for _ in self.all_tags()) >= self.max_corp_tags:
            raise WorldError(f"the corp already has {self.max_corp_tags} tags")
        tag = CorpTag(self.new_id("tag"), group_id, name, order, self.now_int())
        group.tags[tag.id] = tag
        return tag

    def edit_tag_or_group(self, item_id: str, *, name: str | None = None, order: int | None = None) -> str:
        """Rename/reorder a tag or a tag group; returns ``"tag"`` or ``"tag_group"``."""
        target: CorpTag | TagGroup | None = self.find_tag(item_id) or self.tag_groups.get(item_id)
        if target is None:
            raise WorldError(f"unknown tag or tag group {item_id!r}")
        if name is not None:
            target.name = name
        if order is not None:
            target.order = order
        return "tag" if isinstance(target, CorpTag) else "tag_group"

    def remove_tags(self, tag_ids: Sequence[str] = (), group_ids: Sequence[str] = ()) -> None:
        """Delete tags and groups; the tags leave every follow relation; empty groups go too."""
        gone: set[str] = set()
        for group_id in group_ids:
            group = self.tag_groups.pop(group_id, None)
            if group is None:
                raise WorldError(f"unknown tag group {group_id!r}")
            gone.update(group.tags)
        for tag_id in tag_ids:
            tag = self.find_tag(tag_id)
            if tag is None:
                if tag_id in gone:
                    continue
                raise WorldError(f"unknown tag {tag_id!r}")
            group = self.tag_groups[tag.group_id]
            del group.tags[tag_id]
            gone.add(tag_id)
            if not group.tags:
                del self.tag_groups[group.group_id]
        for follow in self.follows.values():
            follow.tag_ids = [t for t in follow.tag_ids if t not in gone]

    def _tag_fields(self, change_type: str, item_id: str, tag_type: str, strategy_id: int | None) -> Fields:
        fields = self.event_fields(EVENT, change_type, Id=item_id, TagType=tag_type)
        if strategy_id is not None:
            fields["StrategyId"] = strategy_id
        return fields

    def _strategy_of(self, item_id: str) -> int | None:
        tag = self.find_tag(item_id)
        group = self.tag_groups.get(tag.group_id if tag else item_id)
        return group.strategy_id if group else None

    # ---- world actions (admin console → callbacks) ---------------------------------------------------

    def create_tag_group(
        self, name: str, tags: Sequence[str], *, order: int = 0, strategy_id: int | None = None
    ) -> Fields:
        if not tags:
            raise WorldError("a tag group needs at least one tag")
        if any(g.name == name for g in self.tag_groups.values()):
            raise WorldError(f"tag group {name!r} exists already")
        group = self.put_tag_group(name, tags, order=order, strategy_id=strategy_id)
        return self._tag_fields("create", group.group_id, "tag_group", strategy_id)

    def create_tag(self, group_id: str, name: str, *, order: int = 0) -> Fields:
        group = self.tag_groups.get(group_id)
        if group is not None and any(t.name == name for t in group.tags.values()):
            raise WorldError(f"tag {name!r} exists already in {group_id}")
        tag = self.put_tag(group_id, name, order=order)
        return self._tag_fields("create", tag.id, "tag", self._strategy_of(tag.id))

    def update_tag(self, item_id: str, *, name: str | None = None, order: int | None = None) -> Fields:
        """Rename or reorder a tag or a tag group (update)."""
        tag_type = self.edit_tag_or_group(item_id, name=name, order=order)
        return self._tag_fields("update", item_id, tag_type, self._strategy_of(item_id))

    def delete_tag(self, item_id: str) -> Fields:
        """Delete a tag or a whole tag group (delete)."""
        strategy_id = self._strategy_of(item_id)
        if item_id in self.tag_groups:
            self.remove_tags(group_ids=[item_id])
            return self._tag_fields("delete", item_id, "tag_group", strategy_id)
        self.remove_tags(tag_ids=[item_id])
        return self._tag_fields("delete", item_id, "tag", strategy_id)

    def shuffle_tags(self, group_id: str = "") -> Fields:
        """Reorder the tags of one group (or of every group, ``group_id=""``) — shuffle."""
        if group_id and group_id not in self.tag_groups:
            raise WorldError(f"unknown tag group {group_id!r}")
        groups = [self.tag_groups[group_id]] if group_id else list(self.tag_groups.values())
        for group in groups:
            if not group.tags:
                continue
            orders = [t.order for t in group.tags.values()]
            shuffled = list(range(1, len(group.tags) + 1)) if len(set(orders)) < len(orders) else orders
            self.rng.shuffle(shuffled)
            for tag, order in zip(group.tags.values(), shuffled, strict=True):
                tag.order = order
        fields = self.event_fields(EVENT, "shuffle", Id=group_id)
        strategy_id = self.tag_groups[group_id].strategy_id if group_id else None
        if strategy_id is not None:
            fields["StrategyId"] = strategy_id
        return fields
