"""The WeCom emulator: the only stand-in for WeCom in tests, the demo and benchmarks.

- :mod:`bot.emulator.state` — :class:`EmulatorState`, the emulated corp and its world actions.
- :mod:`bot.emulator.api` — ``create_emulator_app(state)``, the server API at WeCom's paths.
- :mod:`bot.emulator.server` — ``start_emulator(state, host, port)`` for tests and the CLI.
- :mod:`bot.emulator.callbacks` — :class:`CallbackDriver`, encrypted and signed callbacks with retries.
- :mod:`bot.emulator.scenario` — YAML scenarios and ``run_scenario``.
- :mod:`bot.emulator.faults` / :mod:`bot.emulator.limits` — fault injection and WeCom's frequency limits.
"""
