"""Windows event XML (one `<Event>` per record) -> the `evtx`-package JSON shape.

Windows Event Forwarding, `Get-WinEvent | % ToXml()`, wevtutil and many shippers write each
event as the XML Windows itself renders. Converting it to the shape `winlog.flatten_evtx`
reads means both dialects become the same document, field for field.

The XML is hostile like any log content: a DOCTYPE or ENTITY declaration (entity expansion,
external entities) is refused before parsing, and only the three levels an event has are
walked (Event > System|EventData|UserData > fields), never recursively.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from typing import Any

_DECLARATION = re.compile(r"<!\s*(?:DOCTYPE|ENTITY)", re.IGNORECASE)


def _local(tag: str) -> str:
    """`{http://schemas.microsoft.com/win/2004/08/events/event}System` -> `System`."""
    return tag.rsplit("}", 1)[-1]


def _text(element: ElementTree.Element) -> str | None:
    text = element.text
    return None if text is None or not text.strip() else text.strip()


def _leaf(element: ElementTree.Element) -> Any:
    """A System child as the evtx package writes it: text, or attributes (and text)."""
    text = _text(element)
    if not element.attrib:
        return text
    node: dict[str, Any] = {"#attributes": {_local(k): v for k, v in element.attrib.items()}}
    if text is not None:
        node["#text"] = text
    return node


def _event_data(element: ElementTree.Element) -> dict[str, Any]:
    """<Data Name="X">v</Data> -> {X: v}; unnamed <Data> -> {"Data": [v, ...]} (param1..N later)."""
    named: dict[str, Any] = {}
    unnamed: list[str] = []
    for child in element:
        tag = _local(child.tag)
        if tag == "Data":
            name = child.attrib.get("Name")
            if name:
                named[name] = _text(child) or ""
            else:
                unnamed.append(_text(child) or "")
        elif tag != "Binary":  # binary blobs are not something a rule compares
            named[tag] = _text(child)
    if unnamed:
        named["Data"] = unnamed if len(unnamed) > 1 else unnamed[0]
    return named


def _user_data(element: ElementTree.Element) -> dict[str, Any]:
    """<UserData><LogFileCleared><SubjectUserName>x</...>: {"LogFileCleared": {"SubjectUserName": "x"}}."""
    out: dict[str, Any] = {}
    for child in element:
        out[_local(child.tag)] = {_local(field.tag): _text(field) for field in child}
    return out


def refuse_declarations(text: str) -> None:
    """Anywhere in the record, header included: a declaration is never part of a Windows event."""
    if _DECLARATION.search(text):
        raise ValueError("XML with a DOCTYPE or ENTITY declaration is refused (entity expansion)")


def event_record(text: str) -> dict[str, Any]:
    """One event's XML -> {"Event": {"System": ..., "EventData"|"UserData": ...}}; ValueError if it is not one."""
    refuse_declarations(text)
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise ValueError(f"not well-formed XML: {exc}") from None
    if _local(root.tag) != "Event":
        raise ValueError(f"not a Windows event: the root element is <{_local(root.tag)[:80]}>, not <Event>")
    event: dict[str, Any] = {}
    for part in root:
        tag = _local(part.tag)
        if tag == "System":
            event["System"] = {_local(child.tag): _leaf(child) for child in part}
        elif tag in ("EventData", "ProcessingErrorData"):
            event[tag] = _event_data(part)
        elif tag == "UserData":
            event["UserData"] = _user_data(part)
        elif tag == "RenderingInfo":  # WEF "RenderedText": the message as the Event Viewer shows it
            message = next((_text(child) for child in part if _local(child.tag) == "Message"), None)
            if message:
                event["Message"] = message
    if not isinstance(event.get("System"), dict):
        raise ValueError("not a Windows event: no <System> element")
    return {"Event": event}
