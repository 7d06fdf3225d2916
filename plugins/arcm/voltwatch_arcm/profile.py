"""Detector profiles: a register map in YAML is all a new detector model needs.

A profile says where each value lives (address, type, scale, unit), which bits mean which
alarm or fault, the setpoints with their ranges and defaults, and the command codes with how
the device confirms them. The plugin compiles it once into read plans (contiguous registers
merged into as few requests as possible) and decoders, so the poll loop does no lookups.

Errors in a profile are reported as `file:line: key: message` because the people writing
profiles are integrators reading a vendor's PDF, not Python programmers; the YAML loader below
keeps the line of every mapping key and list item for that purpose.
"""

from __future__ import annotations

import contextvars
import os
import struct
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import voluptuous as vol
import yaml

from hub.core.config import duration

BUILTIN_DIR = Path(str(resources.files(__package__) / "profiles"))

# Where `profile: NAME` is looked for besides the built-ins; the plugin sets this to
# `<config dir>/profiles` at setup, and check-config can set it through the environment.
PROFILE_DIRS: contextvars.ContextVar[tuple[Path, ...]] = contextvars.ContextVar(
    "voltwatch_arcm_profile_dirs", default=()
)

TYPES = {"uint16": 1, "int16": 1, "uint32": 2, "int32": 2, "float32": 2}


class ProfileError(Exception):
    """One or more errors in a profile file, each `file:line: key: message`."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


# -- a YAML loader that remembers lines ---------------------------------------------------
class LineDict(dict):
    """A mapping that knows its own line and each key's line (1-based)."""

    line: int = 0
    key_lines: dict[Any, int]


class LineList(list):
    line: int = 0
    item_lines: list[int]


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    result = LineDict()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> LineList:
    result = LineList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load_yaml_with_lines(text: str, filename: str) -> Any:
    try:
        return yaml.load(text, Loader=_LineLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise ProfileError([f"{filename}:{line}: {err.problem or err}"]) from err


def line_of(data: Any, path: list[Any]) -> int:
    """The line of the deepest element of `path` that the loader recorded."""
    line = getattr(data, "line", 0)
    node = data
    for key in path:
        if isinstance(node, LineDict) and key in node:
            line = node.key_lines.get(key, line)
            node = node[key]
        elif isinstance(node, LineList) and isinstance(key, int) and key < len(node):
            line = node.item_lines[key]
            node = node[key]
        else:
            break
    return line


# -- schema -------------------------------------------------------------------------------
_NAME = vol.All(str, vol.Match(r"^[a-z][a-z0-9_]*$", msg="use lower-case letters, digits, _"))
_ADDRESS = vol.All(int, vol.Range(min=0, max=65535))

_REGISTER = vol.Schema({
    vol.Required("name"): _NAME,
    vol.Required("address"): _ADDRESS,
    vol.Optional("type", default="uint16"): vol.In(list(TYPES)),
    vol.Optional("scale", default=1): vol.Coerce(float),
    vol.Optional("unit"): vol.Any(None, str),
    vol.Optional("device_class"): vol.Any(None, str),
    vol.Optional("entity", default="sensor"): vol.Any(None, vol.In(["sensor"])),
    vol.Optional("decimals"): vol.All(int, vol.Range(min=0, max=6)),
    vol.Optional("sentinel"): vol.All(int, vol.Range(min=0, max=0xFFFFFFFF)),
    vol.Optional("sentinel_fault"): _NAME,
})

_BIT = vol.Schema({
    vol.Optional("type"): _NAME,
    vol.Optional("name"): _NAME,
    vol.Optional("value"): vol.Any(_NAME, [_NAME]),
    vol.Optional("pick", default="max"): vol.In(["max", "min", "first"]),
    vol.Optional("on_event"): _NAME,
    vol.Optional("off_event"): _NAME,
})

_BITFIELD = vol.Schema({
    vol.Required("name"): _NAME,
    vol.Required("address"): _ADDRESS,
    vol.Required("kind"): vol.In(["alarm", "fault", "relay"]),
    vol.Required("bits"): {vol.All(int, vol.Range(min=0, max=15)): _BIT},
})

_SETPOINT = vol.Schema({
    vol.Required("name"): _NAME,
    vol.Required("address"): _ADDRESS,
    vol.Optional("type", default="uint16"): vol.In(list(TYPES)),
    vol.Optional("scale", default=1): vol.Coerce(float),
    vol.Optional("unit"): vol.Any(None, str),
    vol.Required("min"): vol.Coerce(float),
    vol.Required("max"): vol.Coerce(float),
    vol.Optional("default"): vol.Coerce(float),
    vol.Optional("options"): {int: str},
})

_COMMAND = vol.Schema({
    vol.Required("code"): vol.All(int, vol.Range(min=0, max=0xFFFF)),
    vol.Optional("confirm"): {vol.Required("bit"): _NAME, vol.Required("equals"): vol.In([0, 1])},
    vol.Optional("event"): _NAME,
})

PROFILE_SCHEMA = vol.Schema({
    vol.Required("id"): vol.All(str, vol.Length(min=1)),
    vol.Optional("name"): str,
    vol.Optional("manufacturer"): str,
    vol.Optional("model"): str,
    vol.Optional("word_order", default="big"): vol.In(["big", "little"]),
    vol.Optional("max_read", default=100): vol.All(int, vol.Range(min=1, max=125)),
    vol.Optional("max_gap", default=0): vol.All(int, vol.Range(min=0, max=100)),
    vol.Optional("setpoint_refresh", default=60): vol.All(int, vol.Range(min=1)),
    vol.Required("registers"): [_REGISTER],
    vol.Optional("bitfields", default=[]): [_BITFIELD],
    vol.Optional("breaker"): {vol.Required("bit"): _NAME, vol.Optional("closed_when", default=0):
                              vol.In([0, 1])},
    vol.Optional("setpoints", default=[]): [_SETPOINT],
    vol.Optional("commands"): {
        vol.Required("register"): _ADDRESS,
        vol.Optional("confirm_timeout", default=3.0): vol.All(vol.Coerce(float),
                                                              vol.Range(min=0.1, max=60)),
        vol.Required("codes"): {_NAME: _COMMAND},
    },
    vol.Optional("info", default=[]): [_REGISTER],
    # Tiered polling (behind a metered link such as a GSM DTU, or when a device asks for it):
    # which registers and bitfields form the often-read status tier, and this model's
    # suggested intervals. Everything else in `registers`/`bitfields` is the measurement tier.
    vol.Optional("polling", default={}): {
        vol.Optional("status"): [_NAME],
        vol.Optional("status_interval"): vol.All(duration, vol.Range(min=0.01, max=86400)),
        vol.Optional("measure_interval"): vol.All(duration, vol.Range(min=0.01, max=86400)),
    },
})


# -- compiled profile ---------------------------------------------------------------------
@dataclass(slots=True)
class Register:
    """A value register (or a setpoint / info register: same decoding)."""

    name: str
    address: int
    type: str = "uint16"
    scale: float = 1.0
    unit: str | None = None
    device_class: str | None = None
    entity: str | None = "sensor"
    decimals: int = 0
    sentinel: int | None = None
    sentinel_fault: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    default: float | None = None
    options: dict[int, str] | None = None
    line: int = 0

    @property
    def size(self) -> int:
        return TYPES[self.type]


@dataclass(slots=True)
class Bit:
    index: int
    type: str | None = None
    name: str | None = None
    values: tuple[str, ...] = ()
    pick: str = "max"
    on_event: str | None = None
    off_event: str | None = None


@dataclass(slots=True)
class BitField:
    name: str
    address: int
    kind: str
    bits: list[Bit]
    line: int = 0


@dataclass(slots=True)
class Command:
    name: str
    code: int
    confirm_bit: str | None = None
    confirm_equals: int = 1
    event: str | None = None


@dataclass(slots=True)
class Block:
    """One read request: `count` registers from `start`, and what to decode from them."""

    start: int
    count: int
    registers: list[Register] = field(default_factory=list)
    bitfields: list[BitField] = field(default_factory=list)


@dataclass
class Profile:
    id: str
    name: str
    file: str
    manufacturer: str | None
    model: str | None
    word_order: str
    max_read: int
    max_gap: int
    setpoint_refresh: int
    registers: list[Register]
    bitfields: list[BitField]
    setpoints: dict[str, Register]
    commands: dict[str, Command]
    command_register: int | None
    confirm_timeout: float
    info: list[Register]
    breaker_bit: str | None
    breaker_closed_when: int
    poll_blocks: list[Block] = field(default_factory=list)
    setpoint_blocks: list[Block] = field(default_factory=list)
    info_blocks: list[Block] = field(default_factory=list)
    relay_bits: dict[str, tuple[BitField, Bit]] = field(default_factory=dict)
    #: Tiered polling: the status tier (bits) and the measurement tier (values), planned apart.
    status_blocks: list[Block] = field(default_factory=list)
    measure_blocks: list[Block] = field(default_factory=list)
    status_interval: float | None = None
    measure_interval: float | None = None
    #: Per register name: raw words -> (value, state text), shared by every device on this
    #: profile (see `decoding.Slot.readings`).
    readings: dict[str, dict[int, tuple[float | None, str]]] = field(
        default_factory=dict, repr=False, compare=False)

    def decode(self, register: Register, words: list[int], offset: int) -> tuple[int, float]:
        """(raw, value) of one register from a block's words; raw is for sentinel checks."""
        size = TYPES[register.type]
        if size == 1:
            raw = words[offset]
            signed = raw - 0x10000 if register.type == "int16" and raw & 0x8000 else raw
        else:
            first, second = words[offset], words[offset + 1]
            if self.word_order == "little":
                first, second = second, first
            raw = (first << 16) | second
            if register.type == "float32":
                signed = struct.unpack(">f", raw.to_bytes(4, "big"))[0]
            elif register.type == "int32" and raw & 0x80000000:
                signed = raw - 0x100000000
            else:
                signed = raw
        value = signed * register.scale if register.scale != 1 else signed
        if register.decimals:
            value = round(value, register.decimals)
        elif register.scale != 1 or register.type == "float32":
            value = round(value, 6)
        return raw, value

    def encode(self, register: Register, value: float) -> list[int]:
        """Engineering value -> register words (the inverse of decode, rounding to the step)."""
        if register.type == "float32":
            raw = int.from_bytes(struct.pack(">f", value / register.scale), "big")
        else:
            raw = round(value / register.scale)
            raw &= 0xFFFF if register.size == 1 else 0xFFFFFFFF
        if register.size == 1:
            return [raw]
        words = [(raw >> 16) & 0xFFFF, raw & 0xFFFF]
        return words[::-1] if self.word_order == "little" else words


def _decimals_for(scale: float) -> int:
    decimals = 0
    while decimals < 6 and abs(round(scale * 10**decimals) - scale * 10**decimals) > 1e-9:
        decimals += 1
    return decimals


def plan_blocks(
    registers: list[Register], bitfields: list[BitField], max_read: int, max_gap: int
) -> list[Block]:
    """Merge registers into as few read requests as the device allows."""
    spans: list[tuple[int, int, Any]] = [(r.address, r.size, r) for r in registers]
    spans += [(b.address, 1, b) for b in bitfields]
    spans.sort(key=lambda item: item[0])
    blocks: list[Block] = []
    current: Block | None = None
    for address, size, item in spans:
        end = address + size
        if current is not None:
            cur_end = current.start + current.count
            if address - cur_end <= max_gap and end - current.start <= max_read:
                current.count = max(cur_end, end) - current.start
            else:
                current = None
        if current is None:
            current = Block(address, size)
            blocks.append(current)
        if isinstance(item, BitField):
            current.bitfields.append(item)
        else:
            current.registers.append(item)
    return blocks


def _register(raw: dict[str, Any], line: int) -> Register:
    scale = float(raw.get("scale", 1))
    return Register(
        name=raw["name"],
        address=raw["address"],
        type=raw.get("type", "uint16"),
        scale=scale,
        unit=raw.get("unit"),
        device_class=raw.get("device_class"),
        entity=raw.get("entity", "sensor"),
        decimals=raw.get("decimals", _decimals_for(scale)),
        sentinel=raw.get("sentinel"),
        sentinel_fault=raw.get("sentinel_fault"),
        minimum=raw.get("min"),
        maximum=raw.get("max"),
        default=raw.get("default"),
        options=raw.get("options"),
        line=line,
    )


def parse_profile(text: str, filename: str) -> Profile:
    """Validate and compile a profile; raises ProfileError listing every problem with its line."""
    data = load_yaml_with_lines(text, filename)
    if not isinstance(data, dict):
        raise ProfileError([f"{filename}:1: a profile is a mapping (id, registers, ...)"])
    try:
        conf = PROFILE_SCHEMA(data)
    except vol.MultipleInvalid as err:
        raise ProfileError([
            f"{filename}:{line_of(data, list(e.path))}: {'.'.join(str(p) for p in e.path)}: "
            f"{e.msg}"
            for e in err.errors
        ]) from err

    errors: list[str] = []

    def err(path: list[Any], message: str) -> None:
        errors.append(f"{filename}:{line_of(data, path)}: {'.'.join(map(str, path))}: {message}")

    registers = [_register(r, line_of(data, ["registers", i]))
                 for i, r in enumerate(conf["registers"])]
    setpoints = [_register(s, line_of(data, ["setpoints", i]))
                 for i, s in enumerate(conf["setpoints"])]
    info = [_register(r, line_of(data, ["info", i])) for i, r in enumerate(conf["info"])]
    by_name = {r.name: r for r in registers}

    # Addresses must not overlap (a typo copying a vendor table is the usual cause).
    used: dict[int, tuple[str, list[Any]]] = {}

    def claim(address: int, size: int, name: str, path: list[Any]) -> None:
        for a in range(address, address + size):
            if a in used:
                err(path, f"address {a} of {name!r} is already used by {used[a][0]!r}")
                return
        for a in range(address, address + size):
            used[a] = (name, path)

    names: set[str] = set()
    for section, items in (("registers", registers), ("setpoints", setpoints), ("info", info)):
        for i, reg in enumerate(items):
            if reg.name in names:
                err([section, i, "name"], f"name {reg.name!r} is used twice")
            names.add(reg.name)
            claim(reg.address, reg.size, reg.name, [section, i, "address"])
    for i, sp in enumerate(setpoints):
        if sp.minimum is not None and sp.maximum is not None and sp.minimum > sp.maximum:
            err(["setpoints", i, "min"], f"min {sp.minimum:g} is above max {sp.maximum:g}")
        if sp.default is not None and not (sp.minimum <= sp.default <= sp.maximum):  # type: ignore[operator]
            err(["setpoints", i, "default"], f"default {sp.default:g} is outside "
                f"{sp.minimum:g}..{sp.maximum:g}")

    bitfields: list[BitField] = []
    relay_bits: dict[str, tuple[BitField, Bit]] = {}
    for i, bf in enumerate(conf["bitfields"]):
        claim(bf["address"], 1, bf["name"], ["bitfields", i, "address"])
        field_ = BitField(bf["name"], bf["address"], bf["kind"], [],
                          line_of(data, ["bitfields", i]))
        for index, bit in sorted(bf["bits"].items()):
            path = ["bitfields", i, "bits", index]
            values = bit.get("value")
            values = tuple([values] if isinstance(values, str) else values or ())
            for value_name in values:
                if value_name not in by_name:
                    err(path + ["value"], f"unknown register {value_name!r}")
            if bf["kind"] in ("alarm", "fault") and not bit.get("type"):
                err(path, "an alarm or fault bit needs a type (e.g. residual_current_high)")
            if bf["kind"] == "relay" and not bit.get("name"):
                err(path, "a relay bit needs a name")
            entry = Bit(index, bit.get("type"), bit.get("name"), values, bit.get("pick", "max"),
                        bit.get("on_event"), bit.get("off_event"))
            field_.bits.append(entry)
            if entry.name and bf["kind"] == "relay":
                relay_bits[entry.name] = (field_, entry)
        bitfields.append(field_)

    breaker = conf.get("breaker")
    if breaker and breaker["bit"] not in relay_bits:
        err(["breaker", "bit"], f"no relay bit is called {breaker['bit']!r}")

    commands: dict[str, Command] = {}
    command_conf = conf.get("commands")
    if command_conf:
        claim(command_conf["register"], 1, "command", ["commands", "register"])
        for name, cmd in command_conf["codes"].items():
            confirm = cmd.get("confirm") or {}
            if confirm and confirm["bit"] not in relay_bits:
                err(["commands", "codes", name, "confirm", "bit"],
                    f"no relay bit is called {confirm['bit']!r}")
            commands[name] = Command(name, cmd["code"], confirm.get("bit"),
                                     confirm.get("equals", 1), cmd.get("event"))

    # Tiers: by default every bitfield is status and every value register is measurement.
    polling = conf.get("polling") or {}
    status_names = polling.get("status")
    if status_names is None:
        status_names = [bf.name for bf in bitfields]
    by_any: dict[str, Register | BitField] = {**by_name, **{bf.name: bf for bf in bitfields}}
    for i, name in enumerate(status_names):
        if name not in by_any:
            err(["polling", "status", i], f"no register or bitfield is called {name!r}")
    for i, bf in enumerate(bitfields):
        if bf.kind in ("alarm", "fault") and bf.name not in status_names:
            err(["bitfields", i, "name"], f"{bf.kind} bitfield {bf.name!r} must be in "
                "polling.status: the status tier is what notices an alarm")

    if errors:
        raise ProfileError(errors)

    profile = Profile(
        id=conf["id"],
        name=conf.get("name", conf["id"]),
        file=filename,
        manufacturer=conf.get("manufacturer"),
        model=conf.get("model"),
        word_order=conf["word_order"],
        max_read=conf["max_read"],
        max_gap=conf["max_gap"],
        setpoint_refresh=conf["setpoint_refresh"],
        registers=registers,
        bitfields=bitfields,
        setpoints={s.name: s for s in setpoints},
        commands=commands,
        command_register=command_conf["register"] if command_conf else None,
        confirm_timeout=command_conf["confirm_timeout"] if command_conf else 3.0,
        info=info,
        breaker_bit=breaker["bit"] if breaker else None,
        breaker_closed_when=breaker["closed_when"] if breaker else 0,
        relay_bits=relay_bits,
    )
    profile.poll_blocks = plan_blocks(registers, bitfields, profile.max_read, profile.max_gap)
    profile.setpoint_blocks = plan_blocks(setpoints, [], profile.max_read, profile.max_gap)
    profile.info_blocks = plan_blocks(info, [], profile.max_read, profile.max_gap)
    status_set = set(status_names)
    profile.status_blocks = plan_blocks(
        [r for r in registers if r.name in status_set],
        [b for b in bitfields if b.name in status_set], profile.max_read, profile.max_gap)
    profile.measure_blocks = plan_blocks(
        [r for r in registers if r.name not in status_set],
        [b for b in bitfields if b.name not in status_set], profile.max_read, profile.max_gap)
    profile.status_interval = polling.get("status_interval")
    profile.measure_interval = polling.get("measure_interval")
    return profile


def load_profile_file(path: str | Path) -> Profile:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ProfileError([f"{path}:0: cannot read: {err.strerror or err}"]) from err
    return parse_profile(text, str(path))


def search_dirs() -> list[Path]:
    dirs = list(PROFILE_DIRS.get())
    # check-config validates a directory of its own; the core may say which (optional).
    try:
        from hub.core import config as core_config

        var = getattr(core_config, "CONFIG_DIR", None)
        current = var.get() if var is not None else None
    except ImportError:
        current = None
    if current:
        dirs.append(Path(current) / "profiles")
    env_dir = os.environ.get("VOLTWATCH_CONFIG")
    if env_dir:
        dirs.append(Path(env_dir) / "profiles")
    dirs.append(BUILTIN_DIR)
    return dirs


_CACHE: dict[tuple[str, float], Profile] = {}


def find_profile(name: str, extra_dirs: tuple[Path, ...] = ()) -> Profile:
    """A profile by name (`arcm-ref`), or by path; user directories come before built-ins."""
    candidates: list[Path] = []
    if name.endswith((".yaml", ".yml")) or os.sep in name:
        candidates.append(Path(name))
    else:
        candidates += [d / f"{name}.yaml" for d in (*extra_dirs, *search_dirs())]
    for path in candidates:
        if path.is_file():
            key = (str(path.resolve()), path.stat().st_mtime)
            cached = _CACHE.get(key)
            if cached is None:
                cached = _CACHE[key] = load_profile_file(path)
            return cached
    where = ", ".join(str(d) for d in search_dirs())
    raise ProfileError([f"profile {name!r} not found (looked in {where})"])


def builtin_profiles() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))
