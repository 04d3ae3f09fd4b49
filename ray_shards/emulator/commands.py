"""Application commands registered through REST (global and per guild)."""

from __future__ import annotations

import typing

from ray_shards.emulator.ids import SnowflakeGenerator
from ray_shards.emulator.payloads import command_echo
from ray_shards.emulator.world import JSON

__all__ = ["CommandStore"]


class CommandStore:
    """Stores application commands the way Discord echoes them back.

    Parameters
    ----------
    snowflakes
        Source of command ids and versions.
    """

    __slots__ = ("_commands", "_snowflakes")

    def __init__(self, snowflakes: SnowflakeGenerator) -> None:
        self._snowflakes = snowflakes
        self._commands: dict[tuple[int, int | None], list[JSON]] = {}

    def get_all(self, application_id: int, guild_id: int | None) -> list[JSON]:
        """Return the commands of an application (global when ``guild_id`` is None)."""
        return [dict(c) for c in self._commands.get((application_id, guild_id), [])]

    def _build(self, application_id: int, guild_id: int | None, body: JSON, existing: JSON | None) -> JSON:
        command_id = int(existing["id"]) if existing is not None else self._snowflakes.next()
        return command_echo(
            body,
            command_id=command_id,
            application_id=application_id,
            guild_id=guild_id,
            version=self._snowflakes.next(),
        )

    def overwrite(self, application_id: int, guild_id: int | None, bodies: list[JSON]) -> list[JSON]:
        """Bulk-overwrite the commands; a command keeps its id when its name and type stay."""
        current = {(c["name"], c["type"]): c for c in self._commands.get((application_id, guild_id), [])}
        result = []
        for body in bodies:
            key = (body.get("name", ""), int(body.get("type", 1) or 1))
            existing = current.get(key)
            if body.get("id") is not None:
                existing = next((c for c in current.values() if c["id"] == str(body["id"])), existing)
            result.append(self._build(application_id, guild_id, body, existing))
        self._commands[(application_id, guild_id)] = result
        return [dict(c) for c in result]

    def create(self, application_id: int, guild_id: int | None, body: JSON) -> JSON:
        """Create a command, or replace the one with the same name and type."""
        commands = self._commands.setdefault((application_id, guild_id), [])
        key = (body.get("name", ""), int(body.get("type", 1) or 1))
        for index, command in enumerate(commands):
            if (command["name"], command["type"]) == key:
                commands[index] = self._build(application_id, guild_id, body, command)
                return dict(commands[index])
        command = self._build(application_id, guild_id, body, None)
        commands.append(command)
        return dict(command)

    def get(self, application_id: int, guild_id: int | None, command_id: int) -> JSON | None:
        """Return one command, or None."""
        for command in self._commands.get((application_id, guild_id), []):
            if command["id"] == str(command_id):
                return dict(command)
        return None

    def edit(self, application_id: int, guild_id: int | None, command_id: int, body: JSON) -> JSON | None:
        """Patch one command; return it, or None when unknown."""
        commands = self._commands.get((application_id, guild_id), [])
        for index, command in enumerate(commands):
            if command["id"] == str(command_id):
                merged: dict[str, typing.Any] = {**command, **body}
                commands[index] = self._build(application_id, guild_id, merged, command)
                return dict(commands[index])
        return None

    def delete(self, application_id: int, guild_id: int | None, command_id: int) -> bool:
        """Delete one command; return whether it existed."""
        commands = self._commands.get((application_id, guild_id), [])
        for index, command in enumerate(commands):
            if command["id"] == str(command_id):
                del commands[index]
                return True
        return False

    def find(self, application_id: int, name: str, guild_id: int) -> tuple[JSON, int | None] | None:
        """Find the slash command ``name`` usable in a guild (guild commands first).

        Returns
        -------
        tuple[JSON, int | None] | None
            The command and the guild it is registered in (None for global).
        """
        for scope in (guild_id, None):
            for command in self._commands.get((application_id, scope), []):
                if command["name"] == name and command["type"] == 1:
                    return dict(command), scope
        return None
