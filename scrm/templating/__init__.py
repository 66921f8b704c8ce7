"""The Jinja2 sandbox every customer-facing text is rendered in: the variables and filters templates see, the
render budget every render spends (steps, output, text built, time), and compiled template bundles with their
errors at file and line (SOP steps, campaigns and welcomes use it)."""
