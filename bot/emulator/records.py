"""The emulated WeCom world's records: staff, customers, follow relations, groups, corp tags, apps.

Plain mutable dataclasses owned by :class:`~bot.emulator.state.EmulatorState`; field names follow the
WeCom API's JSON so the API handlers can render them without renaming.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class App:
    """A self-built app: its secret, agent id, and whether it may call the customer-contact APIs."""

    secret: str
    agent_id: int
    contact_api: bool = True  # placed under 客户联系 → 可调用接口的应用


@dataclass(slots=True)
class Dealer:
    code: str
    name: str
    city: str = ""


@dataclass(slots=True)
class StaffMember:
    userid: str
    name: str
    dealer_code: str = ""
    position: str = "销售顾问"
    has_contact_permission: bool = True  # appears in get_follow_user_list
    admin_welcome: bool = False  # an admin-configured welcome exists: add events carry no WelcomeCode


@dataclass(slots=True)
class ExternalContact:
    external_userid: str
    name: str
    type: int = 1  # 1 WeChat user, 2 WeCom user
    gender: int = 0  # 0 unknown, 1 male, 2 female
    avatar: str = ""
    unionid: str = ""
    corp_name: str = ""


@dataclass(slots=True)
class Follow:
    """One staff member's relation to one customer (an entry of ``follow_user``)."""

    userid: str
    external_userid: str
    createtime: int
    remark: str = ""
    description: str = ""
    remark_mobiles: list[str] = field(default_factory=list)
    tag_ids: list[str] = field(default_factory=list)
    add_way: int = 1  # 1 scanned a QR code
    state: str = ""
    oper_userid: str = ""
    half: bool = False  # added by the customer without verification


@dataclass(slots=True)
class GroupMember:
    userid: str  # staff userid or customer external_userid
    type: int  # 1 staff, 2 customer
    join_time: int
    join_scene: int  # 1 invited directly, 2 via invite link, 3 via QR code
    invitor: str = ""
    state: str = ""
    name: str = ""
    group_nickname: str = ""


@dataclass(slots=True)
class Group:
    chat_id: str
    name: str
    owner: str
    create_time: int
    notice: str = ""
    members: dict[str, GroupMember] = field(default_factory=dict)
    admins: list[str] = field(default_factory=list)
    member_version: str = ""
    version_counter: int = 0
    dismissed: bool = False


@dataclass(slots=True)
class CorpTag:
    id: str
    group_id: str
    name: str
    order: int
    create_time: int


@dataclass(slots=True)
class TagGroup:
    group_id: str
    name: str
    order: int
    create_time: int
    strategy_id: int | None = None
    tags: dict[str, CorpTag] = field(default_factory=dict)


@dataclass(slots=True)
class ContactWay:
    config_id: str
    type: int
    scene: int
    state: str
    users: list[str]
    skip_verify: bool
    qr_code: str


TRANSFER_DONE, TRANSFER_WAITING, TRANSFER_REFUSED, TRANSFER_LIMIT = 1, 2, 3, 4  # transfer_result status


@dataclass(slots=True)
class CustomerTransfer:
    """One accepted 在职继承 (externalcontact/transfer_customer) of one customer."""

    handover_userid: str
    takeover_userid: str
    external_userid: str
    requested_at: float
    takeover_time: int  # when the takeover happens (or happened); WeCom reports it while waiting too
    success_msg: str = ""
    status: int = TRANSFER_WAITING


@dataclass(slots=True)
class TransferRules:
    """How the emulated world answers transfers: the wait before the takeover (WeCom: 24 h), customers who
    refuse (by id, or drawn with the state's seeded rng at ``refusal_rate``), and the takeover's customer
    limit (None: no limit; WeCom's real limit is per member and large)."""

    delay_seconds: float = 86_400.0
    refusing_customers: set[str] = field(default_factory=set)
    refusal_rate: float = 0.0
    customer_limit: int | None = None
