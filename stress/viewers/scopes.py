"""What each viewer watches: scopes dealt over the portal's rooms and devices, and the broker
filters that cover them."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from stress.viewers import ViewersInputError
from wire.scopes import Scope, ScopeKind


def assign_scopes(
    kind: ScopeKind,
    count: int,
    rooms: Mapping[str, Sequence[str]],
    room: str | None = None,
    device: str | None = None,
    *,
    active: Collection[tuple[str, str]] = (),
) -> list[Scope]:
    """The scope of each of ``count`` viewers, dealt round-robin over what exists.

    Args:
        kind: what each viewer watches.
        count: viewers.
        rooms: the portal's rooms and the devices of each.
        room: watch only this room (``room``), or this room's devices (``device``).
        device: watch only this device of ``room``.
        active: (room, device) pairs seen lately; when there are any, viewers are dealt over
            these rooms and devices only, not over ones that fell silent long ago.

    Raises:
        ViewersInputError: a room or device that the portal does not know, or nothing to watch.
    """
    if kind == "site":
        return [Scope("site")] * count
    if room is not None and room not in rooms:
        known = ", ".join(sorted(rooms)[:5]) or "none yet"
        raise ViewersInputError(f"the portal knows no room {room!r} (rooms: {known})")
    if active and device is None:
        lively = {
            name: [each for each in rooms[name] if (name, each) in active]
            for name in ([room] if room is not None else rooms)
        }
        rooms = {name: names for name, names in lively.items() if names} or rooms
    if kind == "room":
        names = [room] if room is not None else sorted(rooms)
        if not names:
            raise ViewersInputError(
                "the portal knows no rooms yet: publish some values first, or use --scope site"
            )
        return [Scope("room", names[index % len(names)]) for index in range(count)]
    if device is not None:
        if room is None:
            raise ViewersInputError("--device needs --room: device names are per room")
        if device not in rooms[room]:
            raise ViewersInputError(f"the portal knows no device {device!r} in room {room!r}")
        return [Scope("device", room, device)] * count
    pairs = [(name, each) for name in ([room] if room else sorted(rooms)) for each in sorted(rooms[name])]
    if not pairs:
        raise ViewersInputError("the portal knows no devices there yet: publish some values first")
    return [Scope("device", *pairs[index % len(pairs)]) for index in range(count)]


def topic_filters(scopes: Iterable[Scope], root: str) -> list[str]:
    """The fewest MQTT filters that cover ``scopes`` (a room makes its devices' filters needless)."""
    unique = set(scopes)
    if any(scope.kind == "site" for scope in unique):
        return [Scope("site").topic_filter(root)]
    rooms = {scope.room for scope in unique if scope.kind == "room"}
    kept = [scope for scope in unique if scope.kind == "room" or scope.room not in rooms]
    return sorted(scope.topic_filter(root) for scope in kept)
