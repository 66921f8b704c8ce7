"""Lead handoff: routing a hot contact to a dealer advisor, the SLA ladder, staff notifications, the lead lifecycle."""
