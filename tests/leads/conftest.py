"""Lead handoff services installed for a test (invite instead of transfer; pool leads go to operator ``op``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scrm.leads import services as lead_services
from scrm.leads.rules import HandoffRules, Routing
from scrm.leads.services import LeadServices
from tests.leads.routing_world import services


@pytest.fixture
def installed() -> Iterator[LeadServices]:
    current = services(HandoffRules(routing=Routing(reach="invite", pool_notify=["op"])))
    lead_services.install(current)
    yield current
    lead_services.uninstall(current)
