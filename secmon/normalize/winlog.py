"""Windows event records -> the ECS + `winlog.*` document the field contract describes.

Two input dialects carry the same events:

- EVTX as JSON (the `evtx` package, `{"Event": {"System": {...}, "EventData"|"UserData": {...}}}`):
  `flatten_evtx`.
- Flat NXLog / Winlogbeat-style JSON (`EventID`, `Channel`, `Hostname`, the event data
  fields beside them): `flatten_winlogbeat_like`.

Both return the nested document without `organization.id` and `event.original`
(the caller adds those). Event data values become strings, as Windows renders
them and as Sigma rules compare them; field names lose their spaces (Defender
writes `Threat Name`, Sigma rules say `ThreatName`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from secmon.normalize.convert import ADDRESS_CACHE, ADDRESS_CACHED_LENGTH

# Channels whose dataset name the contract fixes; any other channel becomes
# windows.<channel lower-cased, spaces and slashes to _>.
DATASETS = {
    "security": "windows.security",
    "microsoft-windows-sysmon/operational": "windows.sysmon_operational",
    "windows powershell": "windows.powershell",
    "microsoft-windows-powershell/operational": "windows.powershell_operational",
    "system": "windows.system",
}

# NXLog / Winlogbeat keys that describe the record, not the event data.
_FLAT_SYSTEM_KEYS = frozenset({
    "EventID", "Channel", "Hostname", "SourceName", "ProviderName", "ProviderGuid", "TimeCreated", "EventTime",
    "EventReceivedTime", "@timestamp", "@version", "RecordNumber", "EventRecordID", "Message", "Task", "Keywords",
    "Level", "Severity", "SeverityValue", "Opcode", "OpcodeValue", "ProcessID", "ThreadID", "Version",
    "ExecutionProcessID", "ExecutionThreadID", "UserID", "AccountName", "AccountType", "Domain", "EventType",
    "SourceModuleName", "SourceModuleType", "host", "port", "tags", "ActivityID", "RelatedActivityID", "Category",
    "EventTypeOrignal", "EventTypeOriginal",
})


def dataset_of(channel: str) -> str:
    key = channel.lower()
    return DATASETS.get(key) or "windows." + key.replace(" ", "_").replace("/", "_")


# Types that are never a Mapping: tested first, as `isinstance(x, Mapping)` on them goes through
# the ABC machinery (a Python-level call), tens of times per Windows event.
_PLAIN = frozenset({str, int, float, bool, list, type(None)})


def _text(value: Any) -> Any:
    """An XML element's text: `{"#attributes": ..., "#text": x}` -> x."""
    kind = type(value)
    if kind is dict or (kind not in _PLAIN and isinstance(value, Mapping)):
        return value.get("#text")
    return value


def _string(value: Any) -> str | list[str] | None:
    if type(value) is str:  # most values
        return value
    if type(value) is int:  # most of the rest (ProcessId, LogonType, ...)
        return str(value)
    value = _text(value)
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        items = [_string(v) for v in value]
        return [i for i in items if isinstance(i, str)]
    if isinstance(value, Mapping):
        return None  # a nested element without text: nothing a rule can compare
    return str(value)


_NAMES: dict[str, str] = {}  # the few hundred names Windows uses, cleaned once (bounded: names are input)


def _name(raw: str) -> str:
    # Without its whitespace (see above). A dot would make Elasticsearch read a path (a key
    # `CommandLine.x` beside `CommandLine` would get the whole event refused: a way to hide it),
    # and an empty name is refused: a dot becomes `_`, and an empty name `_`.
    found = _NAMES.get(raw)
    if found is None:
        found = "".join(raw.split()).replace(".", "_") or "_"
        if len(_NAMES) < 4096:
            _NAMES[raw] = found
    return found


def _data_fields(node: Any) -> dict[str, Any]:
    """EventData / UserData children -> {name: string value}; unnamed <Data> become param1..N."""
    out: dict[str, Any] = {}
    if node is None or (type(node) is not dict and not isinstance(node, Mapping)):
        return out
    names = _NAMES
    for key, value in node.items():
        if key == "#attributes":
            continue
        if type(value) is str and key != "Data":  # most fields: a named text value
            out[names.get(key) or _name(key)] = value
            continue
        if key == "Data" and (isinstance(value, (list, str)) or (isinstance(value, Mapping) and "#text" in value)):
            unnamed = _text(value)
            for n, item in enumerate(unnamed if isinstance(unnamed, list) else [unnamed], start=1):
                text = _string(item)
                if text is not None:
                    out[f"param{n}"] = text
            continue
        text = _string(value)
        if text is not None:
            out[_name(key)] = text
    return out


# What the `evtx` package writes for SystemTime (UTC, microseconds): already the ISO form `_utc` gives,
# once its date is known to exist (checked once per day seen). Hours 00-23, minutes and seconds 00-59,
# as datetime accepts them; anything else takes the general road.
_SYSTEM_TIME = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{6}Z")
_DAYS: dict[str, bool] = {}  # date text -> whether datetime reads it (bounded: dates are input)


def _utc(stamp: str) -> str:
    found = _SYSTEM_TIME.fullmatch(stamp)
    if found is not None:
        day = found.group(1)
        known = _DAYS.get(day)
        if known is None:
            try:
                datetime.fromisoformat(day)
                known = True
            except ValueError:
                known = False
            if len(_DAYS) >= 4096:
                _DAYS.clear()
            _DAYS[day] = known
        if known:  # datetime drops a zero fraction from its ISO form
            return stamp[:-8] + "Z" if stamp.endswith(".000000Z") else stamp
    return _utc_parsed(stamp)


def _utc_parsed(stamp: str) -> str:
    text = stamp.strip().replace(" ", "T")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)  # evtx SystemTime and NXLog TimeCreated are UTC
        return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    except (ValueError, OverflowError):  # OverflowError: year 1 or 9999 pushed out of range by its offset
        raise ValueError(f"timestamp {stamp[:80]!r} is not a time Python can represent in UTC") from None


def flatten_evtx(record: Mapping[str, Any]) -> dict[str, Any]:
    """An `evtx`-package JSON record (with or without the outer "Event") -> ECS doc."""
    event = record.get("Event", record)
    system = event.get("System") or {}
    provider = (system.get("Provider") or {}).get("#attributes") or {}
    created = ((system.get("TimeCreated") or {}).get("#attributes") or {}).get("SystemTime")
    winlog: dict[str, Any] = {
        "channel": str(system.get("Channel") or ""),
        "event_id": str(_text(system.get("EventID"))),
        "provider_name": str(provider.get("Name") or ""),
        "computer_name": str(system.get("Computer") or ""),
        "record_id": str(system.get("EventRecordID") or ""),
    }
    if provider.get("Guid"):
        winlog["provider_guid"] = str(provider["Guid"])
    user_id = ((system.get("Security") or {}).get("#attributes") or {}).get("UserID")
    if user_id:
        winlog["user"] = {"identifier": str(user_id)}
    data = _data_fields(event.get("EventData"))
    errors, user_data = event.get("ProcessingErrorData"), event.get("UserData")  # most records have neither
    if errors is not None:
        data.update(_data_fields(errors))
    if data:
        winlog["event_data"] = data
    user_data = _user_data(user_data) if user_data is not None else None
    if user_data:
        winlog["user_data"] = user_data
    return _ecs(winlog, _utc(str(created)) if created else None)


def _user_data(node: Any) -> dict[str, Any]:
    """UserData holds one element (e.g. LogFileCleared); its children are the fields."""
    if not isinstance(node, Mapping):
        return {}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key != "#attributes":
            out.update(_data_fields(value) if isinstance(value, Mapping) else {})
    return out


def flatten_winlogbeat_like(record: Mapping[str, Any]) -> dict[str, Any]:
    """A flat NXLog/Winlogbeat-style JSON record (OTRF datasets) -> ECS doc."""
    stamp = record.get("@timestamp") or record.get("TimeCreated") or record.get("EventTime")
    winlog: dict[str, Any] = {
        "channel": str(record.get("Channel") or ""),
        "event_id": str(_text(record.get("EventID"))),
        "provider_name": str(record.get("SourceName") or record.get("ProviderName") or ""),
        "computer_name": str(record.get("Hostname") or ""),
        "record_id": str(record.get("RecordNumber") or record.get("EventRecordID") or ""),
    }
    data = {_name(k): v for k, v in ((k, _string(v)) for k, v in record.items() if k not in _FLAT_SYSTEM_KEYS)
            if v is not None}
    if data:
        winlog["event_data"] = data
    doc = _ecs(winlog, _utc(str(stamp)) if stamp else None)
    if isinstance(record.get("Message"), str):
        doc["message"] = record["Message"]
    return doc


def _ecs(winlog: dict[str, Any], timestamp: str | None) -> dict[str, Any]:
    data: Mapping[str, Any] = winlog.get("event_data") or winlog.get("user_data") or {}
    doc: dict[str, Any] = {}
    if timestamp:
        doc["@timestamp"] = timestamp
    doc["event"] = {"kind": "event", "module": "windows", "code": winlog["event_id"],
                    "dataset": dataset_of(winlog["channel"]), "provider": winlog["provider_name"]}
    doc["host"] = {"name": winlog["computer_name"]}
    doc["winlog"] = winlog
    process = _process(data)
    if process:
        doc["process"] = process
    user = _user(data)
    if user:
        doc["user"] = user
    if data.keys().isdisjoint(_ADDRESS_KEYS):
        return doc
    for side, ip_key, port_key in _ENDPOINTS:
        endpoint = _endpoint(data, ip_key, port_key)
        if endpoint:
            doc[side] = endpoint
    return doc


_ENDPOINTS = (("source", ("IpAddress", "SourceIp", "SourceAddress"), ("IpPort", "SourcePort")),
              ("destination", ("DestinationIp", "DestAddress"), ("DestinationPort", "DestPort")))
_ADDRESS_KEYS = frozenset(key for _, ip_keys, _ in _ENDPOINTS for key in ip_keys)


def _first(data: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str) and value not in ("", "-"):
            return value
    return None


def _integer(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text, 16) if text.lower().startswith("0x") else int(text)
    except ValueError:
        return None


# The event data keys each part of the document reads: most events have none of one part's (a logon has no
# image, a registry change no address), and a C set test then answers for the part.
_PROCESS_KEYS = frozenset({"Image", "NewProcessName", "CommandLine", "ProcessId", "NewProcessId", "ParentImage",
                           "ParentProcessName"})
_USER_KEYS = frozenset({"User", "TargetUserName", "SubjectUserName"})


def _process(data: Mapping[str, Any]) -> dict[str, Any]:
    process: dict[str, Any] = {}
    if data.keys().isdisjoint(_PROCESS_KEYS):
        return process
    executable = _first(data, "Image", "NewProcessName")
    if executable:
        process["executable"] = executable
        process["name"] = executable.replace("/", "\\").rsplit("\\", 1)[-1]
    command_line = _first(data, "CommandLine")
    if command_line:
        process["command_line"] = command_line
    pid = _integer(_first(data, "ProcessId", "NewProcessId"))
    if pid is not None:
        process["pid"] = pid
    parent = _first(data, "ParentImage", "ParentProcessName")
    if parent:
        process["parent"] = {"executable": parent}
        parent_command = _first(data, "ParentCommandLine")
        if parent_command:
            process["parent"]["command_line"] = parent_command
    return process


def _user(data: Mapping[str, Any]) -> dict[str, Any]:
    if data.keys().isdisjoint(_USER_KEYS):
        return {}
    account = _first(data, "User")
    if account and "\\" in account:
        domain, name = account.split("\\", 1)
        return {"domain": domain, "name": name}
    user = _first(data, "TargetUserName", "SubjectUserName")
    if user:
        realm = _first(data, "TargetDomainName" if user == data.get("TargetUserName") else "SubjectDomainName")
        return {"name": user, **({"domain": realm} if realm else {})}
    return {}


# address text -> its canonical form (None: not an address); bounded as convert's: short texts only (a
# hostile megabyte is not kept), all forgotten when there are too many
_ADDRESSES: dict[str, str | None] = {}


def _address(text: str) -> str | None:
    # Events repeat their few addresses (a host's own, its DC's): each is parsed once (ipaddress is slow).
    if text in _ADDRESSES:
        return _ADDRESSES[text]
    try:
        found: str | None = str(ipaddress.ip_address(text.split("%")[0].removeprefix("::ffff:")))
    except ValueError:
        found = None  # "LOCAL", hostnames: not an address, stays in winlog.event_data only
    if len(text) <= ADDRESS_CACHED_LENGTH:
        if len(_ADDRESSES) >= ADDRESS_CACHE:
            _ADDRESSES.clear()
        _ADDRESSES[text] = found
    return found


def _endpoint(data: Mapping[str, Any], ip_keys: tuple[str, ...], port_keys: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    address = _first(data, *ip_keys)
    if address:
        found = _address(address)
        if found is not None:
            out["ip"] = found
    if not out:  # a port alone is not kept
        return out
    port = _integer(_first(data, *port_keys))
    if port is not None and 0 < port < 65536:
        out["port"] = port
    return out
