"""`EmulatorThread`: an `Emulator` on its own event loop in a daemon thread."""

from __future__ import annotations

import asyncio
import threading
import types
import typing

from ray_shards.emulator.client import EmulatorControl
from ray_shards.emulator.config import EmulatorConfig
from ray_shards.emulator.server import Emulator

__all__ = ["EmulatorThread"]

_T = typing.TypeVar("_T")


class EmulatorThread:
    """Runs an `Emulator` in a background thread, for synchronous code and other processes.

    ``with EmulatorThread(cfg) as emu:`` or ``emu = EmulatorThread(cfg).start(); ...; emu.stop()``.
    Observe and control it through `control` (HTTP) or `call` (runs a function on the
    emulator's loop).

    Parameters
    ----------
    config
        Settings; defaults to ``EmulatorConfig()``.
    **overrides
        Field values that replace those of ``config``.
    """

    __slots__ = ("_emulator", "_loop", "_stopped", "_thread")

    def __init__(self, config: EmulatorConfig | None = None, **overrides: typing.Any) -> None:
        self._emulator = Emulator(config, **overrides)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    def __repr__(self) -> str:
        return f"EmulatorThread({self._emulator!r})"

    def start(self, timeout: float = 30.0) -> EmulatorThread:
        """Start the thread and wait until the server listens.

        Parameters
        ----------
        timeout
            Seconds to wait for the server to bind.

        Returns
        -------
        EmulatorThread
            ``self``.
        """
        if self._thread is not None:
            raise RuntimeError("the emulator thread was already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._emulator.start())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                self._stopped.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._emulator.stop())
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()
                self._stopped.set()

        self._thread = threading.Thread(target=run, name="ray-shards-emulator", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("the emulator did not start in time")
        if failure:
            raise failure[0]
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server and join the thread (idempotent)."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None or self._stopped.is_set():
            if thread is not None:
                thread.join(timeout)
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError("the emulator thread did not stop in time")

    def __enter__(self) -> EmulatorThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.stop()

    def call(self, function: typing.Callable[[Emulator], _T], timeout: float = 30.0) -> _T:
        """Run ``function(emulator)`` on the emulator's loop and return its result.

        Parameters
        ----------
        function
            Receives the `Emulator`; runs in the emulator thread.
        timeout
            Seconds to wait for the result.

        Returns
        -------
        _T
            What ``function`` returned.
        """
        loop = self._loop
        if loop is None or self._stopped.is_set():
            raise RuntimeError("the emulator thread is not running")

        async def invoke() -> _T:
            return function(self._emulator)

        return asyncio.run_coroutine_threadsafe(invoke(), loop).result(timeout)

    @property
    def emulator(self) -> Emulator:
        """The underlying `Emulator` (use it only from its own thread, e.g. via `call`)."""
        return self._emulator

    @property
    def config(self) -> EmulatorConfig:
        """The emulator's configuration."""
        return self._emulator.config

    @property
    def port(self) -> int:
        """The bound port."""
        return self._emulator.port

    @property
    def base_url(self) -> str:
        """``http://host:port``."""
        return self._emulator.base_url

    @property
    def rest_url(self) -> str:
        """``base_url + "/api/v10"``."""
        return self._emulator.rest_url

    @property
    def gateway_url(self) -> str:
        """``ws://host:port/gateway``."""
        return self._emulator.gateway_url

    @property
    def control(self) -> EmulatorControl:
        """A synchronous HTTP control client."""
        return self._emulator.control
