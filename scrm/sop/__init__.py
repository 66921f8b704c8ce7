"""The SOP engine: templates, timing, the contact policy and the tick that runs due steps."""
