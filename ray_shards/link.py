"""A caller's authenticated connection to its bot's Orchestrator actor.

Wraps every Ray call to the Orchestrator: proves the token once and then uses
the capability it got, authenticates again when the Orchestrator restarted, and
retries while the actor is restarting. The token stays in this object's memory
and is only ever sent as a method argument (never a constructor argument Ray
would record).
"""

from __future__ import annotations

import asyncio
import logging
import time
import typing

import ray
import ray.exceptions

from ray_shards.auth import bot_id_from_token, validate_token
from ray_shards.connection import NAMESPACE, OrchestratorNotFoundError, ensure_ray, orchestrator_name
from ray_shards.errors import CapabilityExpiredError, NotInitialisedError

__all__ = ["OrchestratorLink", "OrchestratorUnavailableError", "unwrap_ray_error"]

_LOGGER = logging.getLogger("ray_shards.link")

_UNAVAILABLE = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)


def unwrap_ray_error(exc: ray.exceptions.RayTaskError) -> BaseException:
    """The error the Orchestrator (or a host behind it) raised, without Ray's traceback wrapping."""
    cause: BaseException = exc
    while isinstance(cause, ray.exceptions.RayTaskError) and getattr(cause, "cause", None) is not None:
        cause = cause.cause
    return cause if isinstance(cause, Exception) else exc


class OrchestratorUnavailableError(ConnectionError):
    """The Orchestrator did not answer (it died and was not restarted in time)."""


class OrchestratorLink:
    """Authenticated calls to one bot's Orchestrator.

    Parameters
    ----------
    token
        The bot token (kept private to this object).
    address
        Ray address used when this process is not connected to Ray yet.
    """

    __slots__ = ("_address", "_bot_id", "_capability", "_handle", "_lock", "_on_reauthenticated", "_token")

    def __init__(self, token: str, address: str | None) -> None:
        self._token = validate_token(token)
        self._bot_id = bot_id_from_token(self._token)
        self._address = address
        self._handle: typing.Any = None
        self._capability: str | None = None
        self._lock = asyncio.Lock()
        self._on_reauthenticated: typing.Callable[[], typing.Awaitable[None]] | None = None

    def __repr__(self) -> str:
        return f"OrchestratorLink(bot_id={self._bot_id}, connected={self._capability is not None})"

    def __reduce__(self) -> typing.NoReturn:
        msg = "an OrchestratorLink holds the bot token and is never pickled"
        raise TypeError(msg)

    @property
    def bot_id(self) -> int:
        """The bot's user id."""
        return self._bot_id

    @property
    def handle(self) -> typing.Any:
        """The Orchestrator's actor handle (None before `connect`)."""
        return self._handle

    @property
    def token(self) -> str:
        """The bot token, for the hikari objects of this process."""
        return self._token

    def on_reauthenticated(self, callback: typing.Callable[[], typing.Awaitable[None]] | None) -> None:
        """Run ``callback`` after every re-authentication (an Orchestrator restart)."""
        self._on_reauthenticated = callback

    async def connect(self, *, wait: float = 0.0) -> None:
        """Connect to Ray if needed, find the Orchestrator and authenticate.

        Raises
        ------
        OrchestratorNotFoundError
            When no Orchestrator runs for this bot (after waiting up to ``wait`` seconds).
        PermissionError
            When the token does not control that Orchestrator's bot.
        """
        await asyncio.to_thread(ensure_ray, self._address)
        deadline = time.monotonic() + wait
        while True:
            try:
                self._handle = ray.get_actor(orchestrator_name(self._bot_id), namespace=NAMESPACE)
                break
            except ValueError:
                if time.monotonic() >= deadline:
                    msg = (
                        f"no ray_shards orchestrator runs for bot {self._bot_id} on this Ray cluster; start one with "
                        "`ray-shards server` or `ray_shards.run_server`, or launch the bot with run_subprocesses"
                    )
                    raise OrchestratorNotFoundError(msg) from None
                await asyncio.sleep(0.2)
        # The actor may exist a moment before its launcher has given it the bot.
        deadline = time.monotonic() + max(wait, 30.0)
        while True:
            try:
                await self.authenticate()
                return
            except NotInitialisedError:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.2)

    def adopt_handle(self, handle: typing.Any) -> None:
        """Use an Orchestrator handle this process already has (the launcher created the actor)."""
        self._handle = handle

    async def authenticate(self) -> None:
        """Prove the token to the Orchestrator and keep the capability it gives."""
        self._capability = await self._raw("authenticate", self._token, retry_for=30.0)

    async def revoke(self) -> None:
        """Give the capability back (the caller is done): the Orchestrator forgets it at once."""
        capability, self._capability = self._capability, None
        if capability is None or self._handle is None:
            return
        try:
            await asyncio.wait_for(self._handle.revoke.remote(capability), 5.0)
        except Exception as exc:  # the Orchestrator also forgets idle capabilities by itself
            _LOGGER.debug("revoking the capability failed: %s", type(exc).__name__)

    async def initialise(self) -> None:
        """Give a fresh Orchestrator its bot and keep the capability it gives."""
        self._capability = await self._raw("initialise", self._token, retry_for=30.0)

    async def _raw(self, method: str, *args: typing.Any, retry_for: float, **kwargs: typing.Any) -> typing.Any:
        if self._handle is None:
            msg = "not connected to the orchestrator; call connect() first"
            raise RuntimeError(msg)
        deadline = time.monotonic() + retry_for
        delay = 0.05
        while True:
            try:
                return await getattr(self._handle, method).remote(*args, **kwargs)
            except ray.exceptions.RayTaskError as exc:
                raise unwrap_ray_error(exc) from None
            except _UNAVAILABLE as exc:
                if time.monotonic() >= deadline:
                    msg = f"the orchestrator of bot {self._bot_id} is unavailable ({type(exc).__name__})"
                    raise OrchestratorUnavailableError(msg) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    def call_sync(self, method: str, *args: typing.Any, **kwargs: typing.Any) -> typing.Any:
        """Blocking `call` without retries, for synchronous properties (never from inside an actor)."""
        if self._handle is None:
            msg = "not connected to the orchestrator; call connect() first"
            raise RuntimeError(msg)
        deadline = time.monotonic() + 30.0
        while True:
            try:
                return ray.get(getattr(self._handle, method).remote(self._capability, *args, **kwargs))
            except ray.exceptions.RayTaskError as exc:
                cause = unwrap_ray_error(exc)
                if not isinstance(cause, CapabilityExpiredError) or time.monotonic() > deadline:
                    raise cause from None
                self._capability = ray.get(self._handle.authenticate.remote(self._token))
            except _UNAVAILABLE:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    async def call(self, method: str, *args: typing.Any, retry_for: float = 30.0, **kwargs: typing.Any) -> typing.Any:
        """Call ``method`` on the Orchestrator with this link's capability.

        Retries for up to ``retry_for`` seconds while the actor restarts, and
        authenticates again when the Orchestrator forgot the capability.

        Raises
        ------
        OrchestratorUnavailableError
            When the Orchestrator did not come back within ``retry_for``.
        """
        for attempt in range(3):
            capability = self._capability
            try:
                return await self._raw(method, capability, *args, retry_for=retry_for, **kwargs)
            except CapabilityExpiredError:
                if attempt == 2:
                    raise
                async with self._lock:
                    if self._capability != capability:
                        continue  # another call already authenticated again
                    _LOGGER.info("orchestrator of bot %s restarted; authenticating again", self._bot_id)
                    await self.authenticate()
                    if self._on_reauthenticated is not None:
                        await self._on_reauthenticated()
        raise AssertionError("unreachable")
