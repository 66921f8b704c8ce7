"""The Jinja2 sandbox every customer-facing text is rendered in: the variables and filters templates see, and
compiled template bundles with their errors at file and line (SOP steps, campaigns and welcomes use it)."""
