"""Lead handoff services for a test (invite instead of transfer; pool leads go to operator ``op``)."""

from __future__ import annotations

import pytest

from scrm.db import SessionFactory
from scrm.leads.rules import HandoffRules, Routing
from scrm.leads.services import LeadServices
from scrm.models.accounts import UserRole
from tests.leads.routing_world import services
from tests.users_support import Account, add_accounts

ROSTER_IMPORTER = "roster_op"


@pytest.fixture
def installed() -> LeadServices:
    return services(HandoffRules(routing=Routing(reach="invite", pool_notify=["op"])))


@pytest.fixture
async def importer(session_factory: SessionFactory) -> str:
    """An operator who may import the roster (``--as`` of ``lianyi roster import``)."""
    await add_accounts(session_factory, (Account(ROSTER_IMPORTER, UserRole.OPERATOR),))
    return ROSTER_IMPORTER
