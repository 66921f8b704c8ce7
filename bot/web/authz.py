"""Who may do what on the web: the one place that holds the role × dealer-scope rules of every route.

A :class:`Principal` is whoever a request acts as: a console user (session cookie) or a staff member (bearer
token). Its role is a :class:`~scrm.models.accounts.UserRole` value; what a role may attempt comes from
:mod:`scrm.accounts.permissions`, and the dealer scope is applied here:

- leads: admins and operators (``lead.view_all``) see every lead, the pool included; a manager sees their
  dealer's; an advisor only the leads assigned to them. Work on a lead (accept … request lost) is for the lead's
  own advisor; managing it (approve/reject lost, reassign) is for a manager of the lead's dealer, and reassigning
  also for whoever sees every lead. Lead actions need a staff identity (the WeCom userid the lead's history names).
- lead reports: ``report.view`` with every dealer for view-all roles, only their own dealer for a manager.
- the console: admins, operators and managers signed in with a session (advisors use the WeCom sidebar).

Routes call these functions; handlers never test roles themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from scrm.accounts.permissions import Permission, allows
from scrm.leads.actions import LeadActionError
from scrm.leads.transitions import Action
from scrm.models import Lead, StaffRole, UserRole


class Via(StrEnum):
    SESSION = "session"
    TOKEN = "token"


@dataclass(frozen=True)
class Principal:
    """Whoever a request acts as."""

    role: str  # a UserRole value
    corp_id: str
    name: str  # the username (session) or "staff:<userid>" (token): the actor audit rows name
    via: Via
    dealer_id: int | None = None
    staff_userid: str | None = None  # the WeCom userid lead actions are recorded under
    user_id: int | None = None  # the console user (sessions)
    session_id: str = ""  # the session the request came with (sessions)


def staff_role_as_user_role(staff_role: str) -> str:
    """The account role a staff member's roster role stands for ("other" stands for nothing)."""
    return {
        StaffRole.ADVISOR.value: UserRole.ADVISOR.value,
        StaffRole.MANAGER.value: UserRole.MANAGER.value,
        StaffRole.OPERATOR.value: UserRole.OPERATOR.value,
    }.get(staff_role, "")


# what each lead action needs (the lead API's POST routes)
LEAD_ACTION_PERMISSIONS: dict[Action, Permission] = {
    Action.ACCEPT: Permission.LEAD_WORK,
    Action.CONTACTED: Permission.LEAD_WORK,
    Action.BOOK_TEST_DRIVE: Permission.LEAD_WORK,
    Action.TEST_DRIVE_DONE: Permission.LEAD_WORK,
    Action.TEST_DRIVE_NO_SHOW: Permission.LEAD_WORK,
    Action.ORDERED: Permission.LEAD_WORK,
    Action.DELIVERED: Permission.LEAD_WORK,
    Action.REQUEST_LOST: Permission.LEAD_WORK,
    Action.APPROVE_LOST: Permission.LEAD_MANAGE,
    Action.REJECT_LOST: Permission.LEAD_MANAGE,
    Action.REASSIGN: Permission.LEAD_MANAGE,
}


def forbidden(message_zh: str) -> LeadActionError:
    return LeadActionError("forbidden", message_zh, 403)


def sees_every_dealer(principal: Principal) -> bool:
    return allows(principal.role, Permission.LEAD_VIEW_ALL)


@dataclass(frozen=True)
class LeadScope:
    """Which leads a principal sees: every one, one dealer's, or those assigned to one advisor."""

    every: bool = False
    dealer_id: int | None = None
    advisor_userid: str | None = None


def lead_scope(principal: Principal) -> LeadScope:
    if sees_every_dealer(principal):
        return LeadScope(every=True)
    if principal.role == UserRole.MANAGER.value and principal.dealer_id is not None:
        return LeadScope(dealer_id=principal.dealer_id)
    if principal.role in (UserRole.MANAGER.value, UserRole.ADVISOR.value) and principal.staff_userid:
        return LeadScope(advisor_userid=principal.staff_userid)
    raise forbidden("您的角色不能查看线索")


def may_see_lead(principal: Principal, lead: Lead) -> bool:
    scope = lead_scope(principal)
    if scope.every:
        return True
    if scope.dealer_id is not None:
        return lead.dealer_id == scope.dealer_id
    return lead.advisor_userid == scope.advisor_userid


def require_lead_action(principal: Principal, action: Action, lead: Lead) -> str:
    """The staff userid to act as when ``principal`` may take ``action`` on ``lead``; 403 otherwise."""
    permission = LEAD_ACTION_PERMISSIONS[action]
    if permission == Permission.LEAD_WORK:
        if not allows(principal.role, permission) or lead.advisor_userid != principal.staff_userid:
            raise forbidden("这条线索不是您负责的，不能操作")
    elif not (action == Action.REASSIGN and sees_every_dealer(principal)):
        own_dealer = principal.dealer_id is not None and principal.dealer_id == lead.dealer_id
        if not allows(principal.role, permission) or principal.role != UserRole.MANAGER.value or not own_dealer:
            raise forbidden("只有该线索所属门店的经理才能执行此操作")
    if not principal.staff_userid:
        raise forbidden("您的账号未关联企业微信成员，不能操作线索")
    return principal.staff_userid


CONSOLE_ROLES = frozenset({UserRole.ADMIN.value, UserRole.OPERATOR.value, UserRole.MANAGER.value})


def may_use_console(principal: Principal) -> bool:
    """The console is for admins, operators and managers signed in with a session (advisors use the sidebar)."""
    return principal.via == Via.SESSION and principal.role in CONSOLE_ROLES


def report_dealer(principal: Principal, requested: int | None) -> int | None:
    """The dealer a lead report covers (None = every dealer): any for view-all roles, a manager's own only."""
    if not allows(principal.role, Permission.REPORT_VIEW):
        raise forbidden("只有门店经理和运营可以查看线索报表")
    if sees_every_dealer(principal):
        return requested
    if principal.role == UserRole.MANAGER.value and principal.dealer_id is not None:
        if requested is not None and requested != principal.dealer_id:
            raise forbidden("只能查看本门店的线索报表")
        return principal.dealer_id
    raise forbidden("只有门店经理和运营可以查看线索报表")
