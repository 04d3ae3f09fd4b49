"""GatedEventManager.dispatch: hikari's dispatch without a done callback per listener task (no Ray, no socket).

Each listener task holds itself in ``_dispatched_tasks`` until its coroutine ends, as hikari's done
callback would keep it; the rare paths (``wait_for`` waiters, ``return_tasks``) are hikari's own.
"""

from __future__ import annotations

import asyncio
import gc
import typing

import hikari
import pytest

from ray_shards.delivery import GatedEventManager
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(30)


class _Ping(hikari.Event):
    """An event dispatched by code (no shard, no seq): the path custom events and lifetime events take."""

    @property
    def app(self) -> typing.Any:
        return None


def _manager(token: str) -> GatedEventManager:
    app = hikari.GatewayBot(token, banner=None, intents=hikari.Intents.ALL_UNPRIVILEGED)
    return GatedEventManager(app.entity_factory, app.event_factory, hikari.Intents.ALL_UNPRIVILEGED)


async def test_a_listener_task_is_held_while_it_runs_and_let_go_when_it_ends(token: str) -> None:
    manager = _manager(token)
    started = asyncio.Event()
    names: list[str] = []
    done: list[str] = []
    # A future only the listener refers to: without the strong reference in _dispatched_tasks the
    # waiting task would be garbage, collected and never finish.
    holder: list[asyncio.Future[str]] = []

    async def waiting(event: _Ping) -> None:
        task = asyncio.current_task()
        assert task is not None and task in manager._dispatched_tasks
        names.append(task.get_name())
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        holder.append(future)
        started.set()
        done.append(await future)

    manager.subscribe(_Ping, waiting)
    assert manager.dispatch(_Ping()) is None
    await asyncio.wait_for(started.wait(), 5)
    # hikari's names, so a user's task dumps read the same.
    assert names == ["handler 'waiting' for '_Ping'"]
    assert len(manager._dispatched_tasks) == 1
    gc.collect()
    assert len(manager._dispatched_tasks) == 1
    holder.pop().set_result("finished")
    await wait_for(lambda: not manager._dispatched_tasks, 5, "the listener task to let go")
    assert done == ["finished"]


async def test_a_failing_listener_is_let_go_and_reported_as_hikari_does(token: str) -> None:
    manager = _manager(token)
    failures: list[typing.Any] = []

    async def failing(event: _Ping) -> None:
        raise RuntimeError("boom")

    async def on_failure(event: hikari.ExceptionEvent[typing.Any]) -> None:
        failures.append((event.failed_callback, str(event.exception)))

    manager.subscribe(_Ping, failing)
    manager.subscribe(hikari.ExceptionEvent, on_failure)
    manager.dispatch(_Ping())
    await wait_for(lambda: bool(failures) and not manager._dispatched_tasks, 5, "the failure, tasks let go")
    assert failures == [(failing, "boom")]


async def test_waiters_and_return_tasks_take_hikaris_own_dispatch(token: str) -> None:
    manager = _manager(token)
    calls: list[str] = []

    async def listener(event: _Ping) -> None:
        calls.append("listener")

    manager.subscribe(_Ping, listener)
    waiter = asyncio.ensure_future(manager.wait_for(_Ping, timeout=5))
    await asyncio.sleep(0)  # the waiter registers
    assert manager._waiters
    event = _Ping()
    manager.dispatch(event)
    assert await asyncio.wait_for(waiter, 5) is event
    await wait_for(lambda: not manager._dispatched_tasks, 5, "the listener task to let go")
    assert not manager._waiters

    gathered = manager.dispatch(_Ping(), return_tasks=True)
    await asyncio.wait_for(gathered, 5)
    assert calls == ["listener", "listener"]
    assert not manager._dispatched_tasks


async def test_many_events_leave_no_task_behind(token: str) -> None:
    manager = _manager(token)
    handled = 0

    async def first(event: _Ping) -> None:
        nonlocal handled
        handled += 1

    async def second(event: _Ping) -> None:
        nonlocal handled
        await asyncio.sleep(0)
        handled += 1

    manager.subscribe(_Ping, first)
    manager.subscribe(hikari.Event, second)  # polymorphic: found through _Ping.dispatches()
    for _ in range(500):
        manager.dispatch(_Ping())
    await wait_for(lambda: handled == 1000 and not manager._dispatched_tasks, 10, "1,000 listeners, tasks let go")
