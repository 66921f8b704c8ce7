"""All tables. Import from here so Alembic and the services see one metadata."""

from sqlmodel import SQLModel

from scrm.models.accounts import ApiToken, LoginFailure, User, UserRole, UserSession
from scrm.models.campaigns import (
    BatchStatus,
    Campaign,
    CampaignBatch,
    CampaignRun,
    CampaignStatus,
    CampaignTarget,
    RunStatus,
    TargetStatus,
)
from scrm.models.contacts import Contact, DeletedBy, FollowRelation, Stage
from scrm.models.groups import CustomerGroup, GroupMember
from scrm.models.infra import (
    AuditLog,
    CommandStatus,
    DeadLetter,
    InboxEvent,
    InboxStatus,
    OutboxCommand,
    SyncCheckpoint,
)
from scrm.models.intent import IntentSignal, LeadScoreChange, Message
from scrm.models.leads import (
    CLOSED_STATUSES,
    WORKING_STATUSES,
    CustomerTransfer,
    Lead,
    LeadEvent,
    LeadStatus,
    NotificationStatus,
    SlaPhase,
    StaffNotification,
    TransferStatus,
)
from scrm.models.privacy import PrivacyKey, PrivacyTombstone
from scrm.models.sop import ContactTouch, EnrolmentStatus, SopEnrolment, SopStepRun, SopVersion
from scrm.models.tags import ContactTag, Tag, TagGroup
from scrm.models.tenancy import Corp, Dealer, Staff, StaffRole

metadata = SQLModel.metadata

__all__ = [
    "CLOSED_STATUSES",
    "WORKING_STATUSES",
    "ApiToken",
    "AuditLog",
    "BatchStatus",
    "Campaign",
    "CampaignBatch",
    "CampaignRun",
    "CampaignStatus",
    "CampaignTarget",
    "CommandStatus",
    "Contact",
    "ContactTag",
    "ContactTouch",
    "Corp",
    "CustomerGroup",
    "CustomerTransfer",
    "DeadLetter",
    "Dealer",
    "DeletedBy",
    "EnrolmentStatus",
    "FollowRelation",
    "GroupMember",
    "InboxEvent",
    "InboxStatus",
    "IntentSignal",
    "Lead",
    "LeadEvent",
    "LeadScoreChange",
    "LeadStatus",
    "LoginFailure",
    "Message",
    "NotificationStatus",
    "OutboxCommand",
    "PrivacyKey",
    "PrivacyTombstone",
    "RunStatus",
    "SlaPhase",
    "SopEnrolment",
    "SopStepRun",
    "SopVersion",
    "Staff",
    "StaffNotification",
    "StaffRole",
    "Stage",
    "SyncCheckpoint",
    "Tag",
    "TagGroup",
    "TargetStatus",
    "TransferStatus",
    "User",
    "UserRole",
    "UserSession",
    "metadata",
]
