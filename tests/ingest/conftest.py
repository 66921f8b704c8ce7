"""Fixtures for ingestion tests: settings on the test database, an emulated corp served on a socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.emulator.clock import ManualClock
from bot.emulator.server import RunningEmulator, start_emulator
from bot.emulator.state import EmulatorState
from bot.settings import Settings
from tests.conftest import TEST_AES_KEY, TEST_CORP_ID, make_settings

SOP_DIR = str(Path(__file__).resolve().parents[2] / "sop_templates")
INGEST_TOKEN = "ingest-token-0123456789abcdef"
AIBOT_TOKEN = "AiBotTok3n"
OPEN_KFID = "wkAJ2GCAAAZSfhHCt7IFSvLKtMPxyJTw"


@pytest.fixture
def world() -> EmulatorState:
    state = EmulatorState(TEST_CORP_ID, clock=ManualClock(), seed=3)
    state.add_app("test-secret", 1000002)
    state.add_dealer("BJ001", "北京朝阳4S店", "北京")
    state.add_staff("zhangwei", "张伟", "BJ001")
    state.add_kf_account(OPEN_KFID, "涟漪汽车客服")
    return state


@pytest.fixture
async def emulator(world: EmulatorState) -> AsyncIterator[RunningEmulator]:
    async with await start_emulator(world) as running:
        yield running


@pytest.fixture
def ingest_settings(database_url: str, emulator: RunningEmulator) -> Settings:
    return make_settings(
        database_url=database_url,
        sop_dir=SOP_DIR,
        wecom_api_base=emulator.base_url,
        ingest_token=INGEST_TOKEN,
        ingest_max_body_bytes=4096,
        aibot_token=AIBOT_TOKEN,
        aibot_aes_key=TEST_AES_KEY,
    )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
