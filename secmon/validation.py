"""One way to validate the files users write (secmon.yml, pipelines, anomaly detectors): every problem at once.

A file is checked in two passes that report into the same `Problems`:
- its shape (keys, types, allowed values) against the frozen dataclasses the code reads,
  by pydantic-core (the validator of pydantic 2) from a schema derived from the dataclass
  fields, which reports every error with its path in the document; the path is mapped onto
  the YAML marks (`Located.loc`), so each message names file:line:column;
- the checks a type cannot say (a time zone exists, a regex compiles, a duration parses),
  which add to the same list instead of raising at the first.

Then `raise_for` raises one error carrying them all, in file order, so an admin fixes a
config in one pass, not one run per mistake.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from secmon.errors import Location, Problem, SecmonError
from secmon.yamlio import Located

# pydantic-core is imported when a document is validated, not with this module: a command which reads no
# file (--help, a usage error, `scan --input` over JSON) need not pay for it.
if TYPE_CHECKING:
    from pydantic_core import CoreConfig, CoreSchema

T = TypeVar("T")
Path_ = tuple[str | int, ...]

# Unknown keys are errors (a typo must not be a silently ignored setting); a number where text is
# expected is text (YAML reads `8:00` or `2024` as numbers).
SHAPE: CoreConfig = {"extra_fields_behavior": "forbid", "coerce_numbers_to_str": True}


def dotted(at: Path_) -> str:
    """agencies[0].id: how messages name a place in the document."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in at).lstrip(".")


class Problems:
    """Every problem found in one document, with where it is."""

    def __init__(self, doc: Located):
        self.doc = doc
        self.found: list[Problem] = []

    def add(self, message: str, *at: str | int, hint: str | None = None) -> None:
        self.found.append(Problem(message, self.doc.loc(*at), hint))

    @contextmanager
    def section(self) -> Iterator[None]:
        """Run one section's checks: its first error is recorded and the next section is checked all the same."""
        try:
            yield
        except SecmonError as exc:
            self.found.append(Problem(exc.message, exc.location, exc.hint))
            self.found += exc.problems

    def raise_for(self, error: type[SecmonError]) -> None:
        """Raise one `error` holding every problem (file order); nothing when there is none."""
        if not self.found:
            return
        ordered = sorted(self.found, key=lambda p: (p.location.line or 0, p.location.column or 0)
                         if p.location else (0, 0))
        if len(ordered) == 1:
            only = ordered[0]
            raise error(only.message, location=only.location, hint=only.hint)
        raise error(f"{len(ordered)} problems", location=Location(self.doc.loc().path), problems=tuple(ordered))


def shaped(tp: type[T], data: Any, problems: Problems, at: Path_ = ()) -> T | None:
    """`data` as a `tp` (a dataclass) if its shape is right; else None, with every error in `problems`."""
    from pydantic_core import ValidationError

    try:
        return _validator(tp).validate_python(_tuples(data))  # type: ignore[no-any-return]  # of type tp
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            _report(tp, error, problems, at)
        return None


_VALIDATORS: dict[type, Any] = {}  # one per dataclass, built when first needed


def _validator(tp: type) -> Any:
    """pydantic-core's validator of the dataclass `tp`, from the schema `_schema` writes out.

    pydantic's TypeAdapter would derive the same schema, but importing pydantic and running its schema
    generator cost more CPU than the rest of reading the config (issue 12: every command starts with it);
    pydantic-core (the validator itself, which pydantic depends on) is a tenth of that. A unit test keeps
    the two schemas equal (tests/unit/test_config.py)."""
    from pydantic_core import SchemaValidator

    if tp not in _VALIDATORS:
        _VALIDATORS[tp] = SchemaValidator(_schema(tp))
    return _VALIDATORS[tp]


def _schema(tp: Any) -> CoreSchema:
    """The core schema of the types config files use: str, int, bool, Literal of strings, tuple[X, ...]
    and frozen dataclasses of those, as pydantic 2 generates it for a standard dataclass with SHAPE."""
    from pydantic_core import core_schema as cs

    origin = typing.get_origin(tp)
    if origin is Literal:
        return cs.literal_schema(list(typing.get_args(tp)))
    if origin is tuple and typing.get_args(tp)[1:] == (Ellipsis,):
        return cs.tuple_schema([_schema(typing.get_args(tp)[0])], variadic_item_index=0)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        fields = [cs.dataclass_field(f.name, _with_default(_schema(hints[f.name]), f), init=True, kw_only=False)
                  for f in dataclasses.fields(tp)]
        args = cs.dataclass_args_schema(tp.__name__, fields, computed_fields=[], collect_init_only=False)
        config: CoreConfig = {**SHAPE, "title": tp.__name__}
        return cs.dataclass_schema(tp, args, [f.name for f in dataclasses.fields(tp)], post_init=False, slots=False,
                                   config=config, frozen=False)
    scalars: dict[Any, Any] = {str: cs.str_schema, int: cs.int_schema, bool: cs.bool_schema}
    if tp not in scalars:
        raise TypeError(f"no schema for {tp!r}: config files hold str, int, bool, Literal, tuple and dataclasses")
    return scalars[tp]()  # type: ignore[no-any-return]


def _with_default(schema: CoreSchema, field: dataclasses.Field[Any]) -> CoreSchema:
    from pydantic_core import core_schema as cs

    if field.default is not dataclasses.MISSING:
        return cs.with_default_schema(schema, default=field.default)
    if field.default_factory is not dataclasses.MISSING:
        return cs.with_default_schema(schema, default_factory=field.default_factory)
    return schema


def _tuples(data: Any) -> Any:
    # The dataclasses hold tuples (frozen all the way down); YAML gives lists.
    if isinstance(data, list):
        return tuple(_tuples(item) for item in data)
    if isinstance(data, dict):
        return {key: _tuples(value) for key, value in data.items()}
    return data


def _report(tp: type, error: Any, problems: Problems, at: Path_) -> None:
    loc: Path_ = tuple(error["loc"])
    where = at + loc
    name = dotted(where)
    kind, found = error["type"], error.get("input")
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        owner = _type_at(tp, loc[:-1])
        allowed = [f.name for f in dataclasses.fields(owner)] if dataclasses.is_dataclass(owner) else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"allowed keys: {', '.join(sorted(allowed))}"
        problems.add(f"unknown key {loc[-1]!r} in {dotted(where[:-1]) or 'the top level'}", *where, hint=hint)
    elif kind == "missing":
        problems.add(f"{dotted(where[:-1]) or 'the top level'}: missing required key {loc[-1]!r}", *where[:-1])
    else:
        expected = _type_name(_type_at(tp, loc))
        detail = f"expected {expected}" if expected else error["msg"].lower()
        problems.add(f"{name or 'the top level'}: {detail}, found {_shown(found)}", *where)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _type_at(tp: Any, loc: Path_) -> Any:
    """The declared type at `loc` inside the dataclass `tp` (None when the path leaves the declared types)."""
    for part in loc:
        origin = typing.get_origin(tp)
        if dataclasses.is_dataclass(tp) and isinstance(part, str):
            tp = typing.get_type_hints(tp).get(part)
        elif origin is tuple and isinstance(part, int):
            tp = typing.get_args(tp)[0]
        else:
            return None
    return tp


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0]) or 'values'}"
    if dataclasses.is_dataclass(tp):
        return "a mapping of keys"
    names: dict[Any, str] = {str: "a string", int: "an integer", bool: "true or false", float: "a number"}
    return names.get(tp, "")
