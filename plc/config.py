"""Load and validate the register map file (``barriers.toml``).

A wrong file is rejected at load with a `RegisterMapError` that names the file, the line and the
field, e.g. ``barriers.toml:14: barriers[2].addresses.state: address 70000 is out of range``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from plc.registers import (
    BARRIER_V1_STRIDE,
    MAX_ADDRESS,
    MAX_READ_BITS,
    MAX_READ_REGISTERS,
    ROLE_TABLES,
    BarrierConfig,
    BarrierPoints,
    PlcEndpoint,
    Point,
    PointRole,
    RegisterMap,
    Table,
    barrier_v1_points,
)

Address = Annotated[int, msgspec.Meta(ge=0, le=MAX_ADDRESS)]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
UnitId = Annotated[int, msgspec.Meta(ge=0, le=255)]
Stride = Annotated[int, msgspec.Meta(ge=1, le=MAX_ADDRESS)]
Name = Annotated[str, msgspec.Meta(min_length=1)]


class RegisterMapError(ValueError):
    """The register map file is malformed; the message names the line and field."""


class PointSpec(msgspec.Struct, forbid_unknown_fields=True):
    """A point override with an explicit table."""

    address: Address
    table: Table | None = None


PointOverride = Address | PointSpec
"""An address in the role's default table, or ``{table = "...", address = N}``."""


class AddressOverrides(msgspec.Struct, forbid_unknown_fields=True):
    """Per-barrier overrides of ``barrier-v1`` points; unset ones keep the profile's."""

    open_request: PointOverride | None = None
    close_request: PointOverride | None = None
    state: PointOverride | None = None
    fault: PointOverride | None = None
    heartbeat: PointOverride | None = None
    position: PointOverride | None = None
    occupied: PointOverride | None = None


class EndpointSpec(msgspec.Struct, forbid_unknown_fields=True):
    """A ``[[endpoints]]`` table."""

    name: Name
    host: Name
    port: Port = 502
    unit_id: UnitId = 1
    stride: Stride | None = None
    max_read_registers: Annotated[int, msgspec.Meta(ge=1, le=MAX_READ_REGISTERS)] = (
        MAX_READ_REGISTERS
    )
    max_read_bits: Annotated[int, msgspec.Meta(ge=1, le=MAX_READ_BITS)] = MAX_READ_BITS
    max_gap: Annotated[int, msgspec.Meta(ge=0, le=MAX_READ_REGISTERS)] = 8


class BarrierSpec(msgspec.Struct, forbid_unknown_fields=True):
    """A ``[[barriers]]`` table."""

    id: Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
    endpoint: Name
    slot: Annotated[int, msgspec.Meta(ge=0, le=MAX_ADDRESS)]
    name: str = ""
    stride: Stride | None = None
    addresses: AddressOverrides = msgspec.field(default_factory=AddressOverrides)


class RegisterMapFile(msgspec.Struct, forbid_unknown_fields=True):
    """The whole file."""

    barriers: list[BarrierSpec]
    endpoints: list[EndpointSpec]
    profile: Literal["barrier-v1"] = "barrier-v1"
    stride: Stride = BARRIER_V1_STRIDE


_PATH_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


def _locate(text: str, path: str) -> int | None:
    """Return the 1-based line in `text` where the field at msgspec `path` is written, if found.

    Handles the shapes this file has: ``$.field``, ``$.array[i]`` (the i-th ``[[array]]``
    header) and fields below it (the first ``field =`` line after that header, or a
    ``[array.field]`` sub-table).
    """
    steps = [m.group(1) or int(m.group(2)) for m in _PATH_STEP.finditer(path.removeprefix("$"))]
    lines = text.splitlines()
    start, end = 0, len(lines)
    found: int | None = None
    table_path: list[str] = []
    for step in steps:
        if isinstance(step, int):
            name = ".".join(table_path)
            header = re.compile(rf"^\s*\[\[\s*{re.escape(name)}\s*\]\]")
            hits = [n for n in range(start, end) if header.match(lines[n])]
            if step >= len(hits):
                return found
            start = hits[step]
            following = [n for n in range(start + 1, end) if lines[n].lstrip().startswith("[[")]
            end = following[0] if following else len(lines)
            found = start + 1
            continue
        table_path.append(step)
        key = re.compile(rf"^\s*{re.escape(step)}\s*=")
        sub = re.compile(rf"^\s*\[\[?\s*{re.escape('.'.join(table_path))}\s*\]")
        for n in range(start, end):
            if key.match(lines[n]) or sub.match(lines[n]):
                found = n + 1
                if not key.match(lines[n]):
                    start = n
                break
    return found


def _fail(source: str, text: str, path: str, message: str) -> RegisterMapError:
    line = _locate(text, path)
    where = f"{source}:{line}" if line else source
    field = path.removeprefix("$").removeprefix(".") or "(file)"
    return RegisterMapError(f"{where}: {field}: {message}")


def _resolve_point(default: Point, override: PointOverride | None) -> Point:
    if override is None:
        return default
    if isinstance(override, int):
        return Point(default.table, override)
    return Point(override.table or default.table, override.address)


def _barrier_points(spec: BarrierSpec, stride: int) -> Iterator[tuple[PointRole, Point]]:
    defaults = barrier_v1_points(0, stride)
    base = spec.slot * stride
    for role, offset in defaults.by_role():
        # The profile's offset from the slot's base; the base may exceed the address range,
        # which validation reports against the resolved address.
        default = Point(offset.table, base + offset.address)
        yield role, _resolve_point(default, getattr(spec.addresses, role.value))


def parse_register_map(text: str, source: str = "barriers.toml") -> RegisterMap:
    """Parse and validate register map TOML `text`; `source` names it in error messages."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegisterMapError(f"{source}: not valid TOML: {exc}") from None
    try:
        spec = msgspec.convert(raw, RegisterMapFile, strict=True)
    except msgspec.ValidationError as exc:
        message, found, path = str(exc).rpartition(" - at `")
        if not found:
            message, path = str(exc), "$"
        path = path.rstrip("`")
        unknown = re.search(r"unknown field `([^`]+)`", message)
        if unknown:
            path = f"{path}.{unknown.group(1)}"
        raise _fail(source, text, path, message) from None

    endpoints: dict[str, tuple[EndpointSpec, int]] = {}
    for i, ep in enumerate(spec.endpoints):
        if ep.name in endpoints:
            raise _fail(source, text, f"$.endpoints[{i}].name", f"duplicate endpoint {ep.name!r}")
        endpoints[ep.name] = (ep, i)

    barriers: list[BarrierConfig] = []
    seen_ids: set[int] = set()
    # (endpoint, table, address) -> where it was first used, to report overlaps.
    used: dict[tuple[str, Table, int], str] = {}
    for i, b in enumerate(spec.barriers):
        here = f"$.barriers[{i}]"
        if b.id in seen_ids:
            raise _fail(source, text, f"{here}.id", f"duplicate barrier id {b.id}")
        seen_ids.add(b.id)
        if b.endpoint not in endpoints:
            known = ", ".join(sorted(endpoints)) or "none"
            raise _fail(
                source,
                text,
                f"{here}.endpoint",
                f"unknown endpoint {b.endpoint!r} (defined: {known})",
            )
        endpoint_spec, _ = endpoints[b.endpoint]
        stride = b.stride or endpoint_spec.stride or spec.stride
        points: dict[str, Point] = {}
        for role, point in _barrier_points(b, stride):
            field = f"{here}.addresses.{role.value}"
            if point.table not in ROLE_TABLES[role]:
                allowed = " or ".join(sorted(t.value for t in ROLE_TABLES[role]))
                raise _fail(
                    source,
                    text,
                    field,
                    f"{role.value} cannot live in table {point.table.value} (use {allowed})",
                )
            if point.address > MAX_ADDRESS:
                raise _fail(
                    source,
                    text,
                    field if getattr(b.addresses, role.value) is not None else f"{here}.slot",
                    f"address {point.address} of {role.value} is out of range 0..{MAX_ADDRESS}",
                )
            key = (b.endpoint, point.table, point.address)
            owner = f"barrier {b.id} {role.value}"
            if key in used:
                raise _fail(
                    source,
                    text,
                    field if getattr(b.addresses, role.value) is not None else f"{here}.slot",
                    f"{point.table.value} {point.address} on endpoint {b.endpoint!r} "
                    f"is used by both {used[key]} and {owner}",
                )
            used[key] = owner
            points[role.value] = point
        barriers.append(
            BarrierConfig(
                id=b.id,
                name=b.name or f"Barrier {b.id}",
                endpoint=b.endpoint,
                slot=b.slot,
                points=BarrierPoints(**points),
            )
        )

    return RegisterMap(
        endpoints=tuple(
            PlcEndpoint(
                name=ep.name,
                host=ep.host,
                port=ep.port,
                unit_id=ep.unit_id,
                max_read_registers=ep.max_read_registers,
                max_read_bits=ep.max_read_bits,
                max_gap=ep.max_gap,
            )
            for ep in spec.endpoints
        ),
        barriers=tuple(barriers),
    )


def load_register_map(path: str | Path) -> RegisterMap:
    """Load and validate the register map file at `path`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegisterMapError(f"{path}: cannot read the register map: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise RegisterMapError(
            f"{path}:{line}: the register map is not UTF-8 text (byte {exc.start}); "
            "save it as UTF-8"
        ) from None
    return parse_register_map(text, source=str(path))


def dump_register_map(register_map: RegisterMap) -> str:
    """Write `register_map` as a register map file, every point explicit, that loads back equal."""
    lines: list[str] = []
    for ep in register_map.endpoints:
        lines += [
            "[[endpoints]]",
            f"name = {_toml_string(ep.name)}",
            f"host = {_toml_string(ep.host)}",
            f"port = {ep.port}",
            f"unit_id = {ep.unit_id}",
            f"max_read_registers = {ep.max_read_registers}",
            f"max_read_bits = {ep.max_read_bits}",
            f"max_gap = {ep.max_gap}",
            "",
        ]
    for b in register_map.barriers:
        lines += [
            "[[barriers]]",
            f"id = {b.id}",
            f"name = {_toml_string(b.name)}",
            f"endpoint = {_toml_string(b.endpoint)}",
            f"slot = {b.slot}",
            "[barriers.addresses]",
        ]
        lines += [
            f'{role.value} = {{ table = "{point.table.value}", address = {point.address} }}'
            for role, point in b.points.by_role()
        ]
        lines.append("")
    return "\n".join(lines)


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
