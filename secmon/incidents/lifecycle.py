"""An incident's lifecycle: open -> acknowledged -> closed (with a resolution) -> reopened. Pure.

Every step records who, when and why; a step that does not apply to the
current status is refused with what is allowed, never silently ignored.
"""

from __future__ import annotations

from datetime import datetime

from secmon.errors import InputError
from secmon.incidents.grouping import State
from secmon.incidents.records import with_change
from secmon.model import Change

RESOLUTIONS = ("true_positive", "benign", "false_positive")


def acknowledge(state: State, user: str, note: str, now: datetime) -> State:
    _require(state, ("open",), "acknowledge")
    return with_change(state, Change(now, "acknowledged", user, note, "acknowledged"), status="acknowledged")


def close(state: State, user: str, resolution: str, note: str, now: datetime) -> State:
    if resolution not in RESOLUTIONS:
        raise InputError(f"{resolution!r} is not a resolution", hint=f"one of: {', '.join(RESOLUTIONS)}")
    _require(state, ("open", "acknowledged"), "close")
    return with_change(state, Change(now, "closed", user, f"{resolution}: {note}" if note else resolution, "closed"),
                       status="closed", resolution=resolution)


def reopen(state: State, user: str, note: str, now: datetime) -> State:
    _require(state, ("closed",), "reopen")
    return with_change(state, Change(now, "reopened", user, note, "open"), status="open", resolution="")


def _require(state: State, allowed: tuple[str, ...], action: str) -> None:
    status = state.incident.status
    if status not in allowed:
        raise InputError(f"cannot {action} incident {state.incident.id[:12]}: it is {status}",
                         hint=f"{action} applies to {' or '.join(allowed)} incidents")
