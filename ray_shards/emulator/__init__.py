"""A local Discord emulator (REST + gateway) that unmodified hikari connects to.

Public API::

    EmulatorConfig    settings (pydantic)
    Emulator          in-process server: ``async with Emulator(cfg) as emu:``
    EmulatorThread    the same in a daemon thread with its own loop
    EmulatorControl   synchronous HTTP client of the control surface (picklable)
    make_token        a hikari-valid fake bot token
    DEFAULT_TOKEN     the token accepted by default
    main              the standalone server (``python -m ray_shards.emulator``)
"""

from ray_shards.emulator.cli import main
from ray_shards.emulator.client import EmulatorControl, EmulatorControlError
from ray_shards.emulator.config import DEFAULT_BOT_ID, DEFAULT_TOKEN, EmulatorConfig, bot_id_from_token, make_token
from ray_shards.emulator.server import Emulator
from ray_shards.emulator.thread import EmulatorThread

__all__ = [
    "DEFAULT_BOT_ID",
    "DEFAULT_TOKEN",
    "Emulator",
    "EmulatorConfig",
    "EmulatorControl",
    "EmulatorControlError",
    "EmulatorThread",
    "bot_id_from_token",
    "main",
    "make_token",
]
