"""Where the sync services reach the SOP engine without depending on how a process wired it.

The runtime installs its :class:`~scrm.sop.engine.SopServices` at start (:func:`install`) and removes them at
stop. A service calls :func:`active`; with nothing installed (a bare ``lianyi sync``, unit tests of the sync
layer) no SOP starts and the built-in welcome answers contact adds.
"""

from __future__ import annotations

from scrm.service_slot import ServiceSlot
from scrm.sop.engine import SopServices

_slot: ServiceSlot[SopServices] = ServiceSlot()
install = _slot.install
uninstall = _slot.uninstall
active = _slot.active
