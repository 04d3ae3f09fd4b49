"""What the Orchestrator asks Discord (``GET /gateway/bot``) while the bot runs: the daily identify budget once it
has reset, and the shard count Discord recommends (for the auto-reshard policy). In the background, one fetch
of each kind at a time; a failed fetch is logged and tried again later."""

from __future__ import annotations

import asyncio
import logging
import time
import typing

from ray_shards.gateway_info import fetch_gateway_bot

if typing.TYPE_CHECKING:
    from ray_shards.identify import IdentifyScheduler

__all__ = ["GatewayWatch"]

_LOGGER = logging.getLogger("ray_shards.orchestrator")


class GatewayWatch:
    """Fetches ``GET /gateway/bot`` for one bot, at most ``policy_interval`` apart for the auto-reshard policy."""

    def __init__(self, policy_interval: float) -> None:
        self._policy_interval = policy_interval
        self._budget_task: asyncio.Task[None] | None = None
        self._policy_checked = time.monotonic()

    def refresh_budget(self, scheduler: IdentifyScheduler, rest_url: str, token: str | None, now: float, *,
                       force: bool = False) -> None:
        """After Discord's ``reset_after`` (or at once with ``force``), fetch the new daily identify budget into
        ``scheduler`` (``now``: the monotonic clock). Nothing without a token (a restarted Orchestrator learns it
        at the first authenticate)."""
        if token is None or not (force or scheduler.budget_stale(now)):
            return
        if self._budget_task is not None and not self._budget_task.done():
            return

        async def refresh() -> None:
            try:
                info = await fetch_gateway_bot(rest_url, token)
            except Exception as exc:
                _LOGGER.warning("could not refresh the identify budget (GET /gateway/bot): %s", exc)
                await asyncio.sleep(5.0)
                return
            scheduler.set_budget(info.remaining, info.reset_after, time.monotonic())
            _LOGGER.info("identify budget refreshed: %s left, resets in %.0f s", info.remaining, info.reset_after)

        self._budget_task = asyncio.get_running_loop().create_task(refresh())

    def policy_due(self) -> bool:
        """Whether the auto-reshard policy looks again now (every ``policy_interval``); True starts the next wait."""
        if time.monotonic() - self._policy_checked < self._policy_interval:
            return False
        self._policy_checked = time.monotonic()
        return True

    async def recommended_shards(self, scheduler: IdentifyScheduler, rest_url: str, token: str | None) -> int | None:
        """The shard count Discord recommends now (None: no token, or the fetch failed); refreshes the budget left."""
        if token is None:
            return None
        try:
            info = await fetch_gateway_bot(rest_url, token)
        except Exception as exc:
            _LOGGER.warning("auto-reshard: GET /gateway/bot failed: %s", exc)
            return None
        scheduler.set_remaining(info.remaining)
        return info.shards
