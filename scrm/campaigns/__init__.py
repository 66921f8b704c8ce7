"""Campaigns: 1vN group pushes and 1v1 pushes (audience, content, schedule, approval, planning, tracking)."""
