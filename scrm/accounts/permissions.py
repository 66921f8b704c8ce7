"""What each role may do: one table, read by the web layer and by the CLI's ``--as``.

Dealer scope (a manager sees only their dealer's leads, an advisor only their own) is applied on top of
these by the places that read rows; this table only says whether a role may attempt an action at all.
"""

from __future__ import annotations

from enum import StrEnum

from scrm.models.accounts import UserRole


class Permission(StrEnum):
    CAMPAIGN_EDIT = "campaign.edit"  # save, cancel
    CAMPAIGN_APPROVE = "campaign.approve"  # approve, reject (never one's own)
    ROSTER_IMPORT = "roster.import"
    TEMPLATE_EDIT = "template.edit"
    LEAD_WORK = "lead.work"  # accept, contacted, test drive, ordered, delivered, request lost
    LEAD_MANAGE = "lead.manage"  # approve/reject lost, reassign
    LEAD_VIEW_ALL = "lead.view_all"  # every dealer's leads and the pool
    REPORT_VIEW = "report.view"
    USER_ADMIN = "user.admin"  # add, disable, passwords, sessions, staff tokens
    PRIVACY = "privacy"  # export, erase
    AUDIT_READ = "audit.read"
    MESSAGE_IMPORT = "message.import"  # lianyi ingest messages
    DEADLETTER_REPLAY = "deadletter.replay"  # put a dead-lettered event back into the inbox


_ALL = frozenset(Permission)

ROLE_PERMISSIONS: dict[UserRole, frozenset[Permission]] = {
    UserRole.ADMIN: _ALL,
    UserRole.OPERATOR: frozenset(
        {
            Permission.CAMPAIGN_EDIT,
            Permission.CAMPAIGN_APPROVE,
            Permission.ROSTER_IMPORT,
            Permission.TEMPLATE_EDIT,
            Permission.LEAD_MANAGE,
            Permission.LEAD_VIEW_ALL,
            Permission.REPORT_VIEW,
        }
    ),
    UserRole.MANAGER: frozenset(
        {Permission.CAMPAIGN_APPROVE, Permission.LEAD_WORK, Permission.LEAD_MANAGE, Permission.REPORT_VIEW}
    ),
    UserRole.ADVISOR: frozenset({Permission.LEAD_WORK}),
}

ROLE_NAMES_ZH: dict[UserRole, str] = {
    UserRole.ADMIN: "管理员",
    UserRole.OPERATOR: "运营",
    UserRole.MANAGER: "经销商经理",
    UserRole.ADVISOR: "销售顾问",
}


def allows(role: str, permission: Permission) -> bool:
    """Whether a user of ``role`` may attempt ``permission`` (an unknown role may do nothing)."""
    try:
        return permission in ROLE_PERMISSIONS[UserRole(role)]
    except ValueError:
        return False
