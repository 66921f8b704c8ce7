"""Run the emulator API on a real socket (tests, the demo, ``lianyi emulator``)."""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType

from aiohttp import web

from bot.emulator.api import create_emulator_app
from bot.emulator.state import EmulatorState


@dataclass(slots=True)
class RunningEmulator:
    """A listening emulator; ``base_url`` is what ``LIANYI_WECOM_API_BASE`` should be set to."""

    state: EmulatorState
    runner: web.AppRunner
    host: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def close(self) -> None:
        await self.runner.cleanup()

    async def __aenter__(self) -> RunningEmulator:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


async def start_emulator(state: EmulatorState, host: str = "127.0.0.1", port: int = 0) -> RunningEmulator:
    """Serve ``state`` on ``host:port`` (port 0 picks a free one); close the handle to stop."""
    runner = web.AppRunner(create_emulator_app(state), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    bound = next((int(addr[1]) for addr in runner.addresses if isinstance(addr, tuple)), port)
    return RunningEmulator(state=state, runner=runner, host=host, port=bound)
