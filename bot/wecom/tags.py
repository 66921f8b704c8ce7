"""Corp tags (企业标签) for :class:`bot.wecom.client.WeComClient`, as a mixin: mark a customer's tags, and read,
add, edit and delete the corp's tag library. Each method is one API call through :meth:`WeComClient.call`."""

from __future__ import annotations

from typing import Any

from bot.wecom.endpoints import EXTERNAL, CallsWeCom, drop_none


class CorpTagApi:
    async def mark_tag(
        self: CallsWeCom,
        userid: str,
        external_userid: str,
        add_tag: list[str] | None = None,
        remove_tag: list[str] | None = None,
    ) -> dict[str, Any]:
        body = {
            "userid": userid,
            "external_userid": external_userid,
            "add_tag": add_tag or [],
            "remove_tag": remove_tag or [],
        }
        return await self.call("POST", f"{EXTERNAL}/mark_tag", json=body)

    async def get_corp_tag_list(
        self: CallsWeCom, tag_id: list[str] | None = None, group_id: list[str] | None = None
    ) -> dict[str, Any]:
        return await self.call(
            "POST", f"{EXTERNAL}/get_corp_tag_list", json=drop_none({"tag_id": tag_id, "group_id": group_id})
        )

    async def add_corp_tag(
        self: CallsWeCom,
        tag: list[dict[str, Any]],
        *,
        group_id: str | None = None,
        group_name: str | None = None,
        order: int | None = None,
    ) -> dict[str, Any]:
        body = drop_none({"group_id": group_id, "group_name": group_name, "order": order, "tag": tag})
        return await self.call("POST", f"{EXTERNAL}/add_corp_tag", json=body)

    async def edit_corp_tag(
        self: CallsWeCom, id: str, *, name: str | None = None, order: int | None = None
    ) -> dict[str, Any]:
        return await self.call(
            "POST", f"{EXTERNAL}/edit_corp_tag", json=drop_none({"id": id, "name": name, "order": order})
        )

    async def del_corp_tag(
        self: CallsWeCom, tag_id: list[str] | None = None, group_id: list[str] | None = None
    ) -> dict[str, Any]:
        return await self.call(
            "POST", f"{EXTERNAL}/del_corp_tag", json=drop_none({"tag_id": tag_id, "group_id": group_id})
        )
