"""`EmulatorControl`: a synchronous, picklable client of the emulator's control surface."""

from __future__ import annotations

import json
import time
import typing
import urllib.error
import urllib.parse
import urllib.request

__all__ = ["EmulatorControl", "EmulatorControlError"]


class EmulatorControlError(RuntimeError):
    """The control surface answered with an error."""


def _int_keys(mapping: typing.Any) -> dict[int, typing.Any]:
    if not isinstance(mapping, dict):
        return {}
    return {int(k): v for k, v in mapping.items()}


class EmulatorControl:
    """Talks to ``/_emulator/`` of a running emulator with the standard library only.

    It holds nothing but the base URL, so it pickles into Ray actors and other
    processes. Do not call it from the emulator's own event loop thread (it blocks).

    Parameters
    ----------
    base_url
        ``http://host:port`` of the emulator.
    timeout
        Seconds per HTTP request.
    """

    __slots__ = ("base_url", "timeout")

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"EmulatorControl({self.base_url!r})"

    def __getstate__(self) -> dict[str, typing.Any]:
        return {"base_url": self.base_url, "timeout": self.timeout}

    def __setstate__(self, state: dict[str, typing.Any]) -> None:
        self.base_url = state["base_url"]
        self.timeout = state.get("timeout", 30.0)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EmulatorControl) and other.base_url == self.base_url

    def __hash__(self) -> int:
        return hash(self.base_url)

    # -- transport ----------------------------------------------------------------------------

    def _call(self, action: str, body: dict[str, typing.Any] | None = None, **query: typing.Any) -> typing.Any:
        params = {k: v for k, v in query.items() if v is not None}
        url = f"{self.base_url}/_emulator/{action}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            url,
            data=data,
            method="GET" if body is None else "POST",
            headers={"Content-Type": "application/json"} if data is not None else {},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                detail = exc.reason
            raise EmulatorControlError(f"{action}: HTTP {exc.code}: {detail}") from None
        return payload["result"]

    def _post(self, action: str, **body: typing.Any) -> typing.Any:
        return self._call(action, {k: v for k, v in body.items() if v is not None})

    # -- observation --------------------------------------------------------------------------

    def health(self) -> dict[str, typing.Any]:
        """Return liveness information."""
        return typing.cast(dict[str, typing.Any], self._call("health"))

    def stats(self) -> dict[str, typing.Any]:
        """Return the emulator's stats with shard-id keys as ints."""
        stats = typing.cast(dict[str, typing.Any], self._call("stats"))
        stats["connected"] = _int_keys(stats.get("connected"))
        stats["max_concurrent"] = _int_keys(stats.get("max_concurrent"))
        return stats

    def identify_log(self) -> list[dict[str, typing.Any]]:
        """Return every accepted IDENTIFY."""
        return typing.cast(list[dict[str, typing.Any]], self._call("identify_log"))

    def resume_log(self) -> list[dict[str, typing.Any]]:
        """Return every accepted RESUME."""
        return typing.cast(list[dict[str, typing.Any]], self._call("resume_log"))

    def received(self, shard_id: int | None = None, op: int | None = None) -> list[dict[str, typing.Any]]:
        """Return client payloads, optionally filtered."""
        return typing.cast(list[dict[str, typing.Any]], self._call("received", shard_id=shard_id, op=op))

    def rest_log(self) -> list[dict[str, typing.Any]]:
        """Return every REST request."""
        return typing.cast(list[dict[str, typing.Any]], self._call("rest_log"))

    def messages(self) -> list[dict[str, typing.Any]]:
        """Return posted channel messages."""
        return typing.cast(list[dict[str, typing.Any]], self._call("messages"))

    def interaction_responses(self) -> list[dict[str, typing.Any]]:
        """Return interaction callbacks, follow-ups and edits."""
        return typing.cast(list[dict[str, typing.Any]], self._call("interaction_responses"))

    def stream_sent(self) -> list[dict[str, typing.Any]]:
        """Return every event the stream generated."""
        return typing.cast(list[dict[str, typing.Any]], self._call("stream_sent"))

    def script_sent(self) -> list[dict[str, typing.Any]]:
        """Return every scripted event (``script``)."""
        return typing.cast(list[dict[str, typing.Any]], self._call("script_sent"))

    def script(
        self,
        action: str,
        guild_id: int | None = None,
        *,
        content: str | None = None,
        message_id: int | None = None,
        emoji: str = "x",
    ) -> dict[str, typing.Any]:
        """Dispatch one scripted guild event: ``edit``, ``react_add``, ``react_remove``, ``join`` or ``leave``."""
        return typing.cast(
            dict[str, typing.Any],
            self._call("script", {k: v for k, v in (("action", action), ("guild_id", guild_id), ("content", content),
                                                    ("message_id", message_id), ("emoji", emoji)) if v is not None}),
        )

    def sessions(self) -> list[dict[str, typing.Any]]:
        """Return a summary of every live session."""
        return typing.cast(list[dict[str, typing.Any]], self._call("sessions"))

    def guild_ids(self) -> list[int]:
        """Return every guild id."""
        return [int(g) for g in self._call("guilds")]

    def guilds_for_shard(self, shard_id: int, shard_count: int) -> list[int]:
        """Return the guild ids of one shard."""
        return [int(g) for g in self._call("guilds", shard_id=shard_id, shard_count=shard_count)]

    def reset_logs(self) -> None:
        """Clear logs and counters."""
        self._post("reset_logs")

    # -- control ------------------------------------------------------------------------------

    def reconnect(self, shard_id: int) -> int:
        """Send op 7 to the shard; return how many connections got it."""
        return int(self._post("reconnect", shard_id=shard_id))

    def invalidate(self, shard_id: int, resumable: bool = False) -> int:
        """Send op 9 to the shard; return how many connections got it."""
        return int(self._post("invalidate", shard_id=shard_id, resumable=resumable))

    def close(self, shard_id: int, code: int = 4000) -> int:
        """Close the shard's connections with ``code``."""
        return int(self._post("close", shard_id=shard_id, code=code))

    def drop(self, shard_id: int) -> int:
        """Abort the shard's TCP connections."""
        return int(self._post("drop", shard_id=shard_id))

    def zombie(self, shard_id: int, enabled: bool = True) -> None:
        """Stop or resume acknowledging the shard's heartbeats."""
        self._post("zombie", shard_id=shard_id, enabled=enabled)

    def dispatch(self, shard_id: int, event_name: str, data: typing.Any) -> int:
        """Inject a dispatch into the shard's sessions."""
        return int(self._call("dispatch", {"shard_id": shard_id, "event_name": event_name, "data": data}))

    def dispatch_to_guild(self, guild_id: int, event_name: str, data: typing.Any) -> int:
        """Inject a dispatch into every session covering the guild."""
        return int(self._call("dispatch_to_guild", {"guild_id": guild_id, "event_name": event_name, "data": data}))

    def interaction(
        self, guild_id: int, command_name: str, options: typing.Any = None, user_id: int | None = None
    ) -> dict[str, typing.Any]:
        """Send a slash-command interaction; return ``{"id", "token", "sessions"}``."""
        return typing.cast(
            dict[str, typing.Any],
            self._post("interaction", guild_id=guild_id, command_name=command_name, options=options, user_id=user_id),
        )

    def set_limits(
        self,
        remaining: int | None = None,
        max_concurrency: int | None = None,
        shards: int | None = None,
        total: int | None = None,
    ) -> dict[str, typing.Any]:
        """Change the session start budget, concurrency or recommended shard count."""
        return typing.cast(
            dict[str, typing.Any],
            self._post("set_limits", remaining=remaining, max_concurrency=max_concurrency, shards=shards, total=total),
        )

    def start_stream(self, rate: float) -> None:
        """Start the MESSAGE_CREATE stream at ``rate`` events/s in total."""
        self._post("start_stream", rate=rate)

    def stop_stream(self) -> int:
        """Stop the stream; return how many events it generated."""
        return int(self._post("stop_stream"))

    # -- waiting ------------------------------------------------------------------------------

    def wait_until(
        self,
        predicate: typing.Callable[[EmulatorControl], bool],
        timeout: float,
        interval: float = 0.05,
    ) -> None:
        """Poll ``predicate(self)`` until it is true.

        Parameters
        ----------
        predicate
            Called with this control client.
        timeout
            Seconds before giving up.
        interval
            Seconds between polls.

        Raises
        ------
        TimeoutError
            With the predicate's name, the last exception it raised (if any) and the stats.
        """
        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        while True:
            try:
                if predicate(self):
                    return
                last_error = None
            except Exception as exc:
                last_error = exc
            if time.monotonic() >= deadline:
                break
            time.sleep(interval)
        name = getattr(predicate, "__qualname__", repr(predicate))
        try:
            stats: typing.Any = self.stats()
            stats.pop("closes", None)
        except Exception as exc:
            stats = f"<unavailable: {exc}>"
        detail = f"; last error: {last_error!r}" if last_error is not None else ""
        raise TimeoutError(f"condition {name} not met within {timeout:.1f}s{detail}; emulator stats: {stats}")
