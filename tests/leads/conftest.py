"""Lead handoff services for a test (invite instead of transfer; pool leads go to operator ``op``)."""

from __future__ import annotations

import pytest

from scrm.leads.rules import HandoffRules, Routing
from scrm.leads.services import LeadServices
from tests.leads.routing_world import services


@pytest.fixture
def installed() -> LeadServices:
    return services(HandoffRules(routing=Routing(reach="invite", pool_notify=["op"])))
