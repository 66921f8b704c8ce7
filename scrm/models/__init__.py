"""All tables. Import from here so Alembic and the services see one metadata."""

from sqlmodel import SQLModel

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
from scrm.models.sop import ContactTouch, EnrolmentStatus, SopEnrolment, SopStepRun, SopVersion
from scrm.models.tags import ContactTag, Tag, TagGroup
from scrm.models.tenancy import Corp, Dealer, Staff, StaffRole

metadata = SQLModel.metadata

__all__ = [
    "CLOSED_STATUSES",
    "WORKING_STATUSES",
    "CustomerTransfer",
    "Lead",
    "LeadEvent",
    "LeadStatus",
    "NotificationStatus",
    "SlaPhase",
    "StaffNotification",
    "TransferStatus",
    "AuditLog",
    "CommandStatus",
    "Contact",
    "ContactTag",
    "ContactTouch",
    "Corp",
    "CustomerGroup",
    "DeadLetter",
    "Dealer",
    "DeletedBy",
    "EnrolmentStatus",
    "FollowRelation",
    "GroupMember",
    "InboxEvent",
    "InboxStatus",
    "IntentSignal",
    "LeadScoreChange",
    "Message",
    "OutboxCommand",
    "SopEnrolment",
    "SopStepRun",
    "SopVersion",
    "Staff",
    "StaffRole",
    "Stage",
    "SyncCheckpoint",
    "Tag",
    "TagGroup",
    "metadata",
]
