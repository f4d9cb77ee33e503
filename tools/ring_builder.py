"""cairn-ring: build and inspect rings, with swift-ring-builder's verbs and syntax.

    cairn-ring <name>.builder                     summary (add --json for one JSON object)
    cairn-ring <name>.builder create <part_power> <replicas> <min_part_hours> [--force]
    cairn-ring <name>.builder add r1z1-10.0.0.1:6200[R10.0.1.1:6300]/sda[_meta] <weight> [...]
    cairn-ring <name>.builder add --region 1 --zone 1 --ip 10.0.0.1 --port 6200 --device sda
                                  --weight 100 [--replication-ip IP --replication-port N --meta M]
    cairn-ring <name>.builder remove <search> [...] [--yes]
    cairn-ring <name>.builder set_weight <search> <weight> [...] [--yes]
    cairn-ring <name>.builder set_info <search> <ip:port/device_meta> [...] [--yes]
    cairn-ring <name>.builder set_info <search> --change-ip IP --change-port N ... [--yes]
    cairn-ring <name>.builder search <search> [--json]
    cairn-ring <name>.builder list_parts <search> [...] [--json]
    cairn-ring <name>.builder rebalance [--seed N] [--json]
    cairn-ring <name>.builder dispersion [--json]
    cairn-ring <name>.builder validate
    cairn-ring <name>.builder write_ring
    cairn-ring <name>.builder pretend_min_part_hours_passed
    cairn-ring <name>.builder set_min_part_hours <hours>
    cairn-ring <name>.builder set_overload <fraction>|<percent>%|none   (none: dispersion first)

Search values: d<id>r<region>z<zone>-<ip>:<port>R<rip>:<rport>/<device>_<meta>, any subset.
`rebalance` and `write_ring` write the ring file <name>.ring next to the builder.
Exit status: 0 done, 1 nothing changed (rebalance moved nothing), 2 error (one line on stderr).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ring.builder import RingBuilder
from ring.builder_file import load_builder, save_builder
from ring.device import Device
from ring.devspec import (
    DeviceChange,
    NewDevice,
    parse_add,
    parse_change,
    parse_search,
    parse_weight,
)
from ring.errors import RingError, RingFileError
from ring.report import device_rows, format_devices, format_summary, summary
from ring.ringfile import read_ring, write_ring

__all__ = ["main"]

EXIT_OK, EXIT_WARNING, EXIT_ERROR = 0, 1, 2
_PROGRESS_PARTITIONS_MIN = 1 << 16  # show rebalance progress on stderr from this ring size on


class CliError(Exception):
    """Bad command-line usage; printed as one line."""


Opts = dict[str, str | bool]


def _split(args: list[str], valued: set[str], flags: set[str]) -> tuple[list[str], Opts]:
    """Positionals and --options. A single dash is not an option (search values use it)."""
    pos: list[str] = []
    opts: Opts = {}
    it = iter(args)
    for arg in it:
        if not arg.startswith("--"):
            pos.append(arg)
            continue
        name, eq, value = arg[2:].partition("=")
        if name in flags and not eq:
            opts[name] = True
        elif name in valued:
            if not eq:
                value = next(it, None)  # type: ignore[assignment]
                if value is None:
                    raise CliError(f"option --{name} needs a value")
            opts[name] = value
        else:
            raise CliError(f"unknown option --{name}")
    return pos, opts


def _int(text: str | bool, what: str) -> int:
    try:
        return int(str(text))
    except ValueError:
        raise CliError(f"{what} must be an integer, got {text!r}") from None


def _ring_path(builder_path: Path) -> Path:
    name = builder_path.name
    stem = name[: -len(".builder")] if name.endswith(".builder") else name
    return builder_path.with_name(stem + ".ring")


class Session:
    """One command against one builder file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.out: list[str] = []

    def load(self) -> RingBuilder:
        if not self.path.exists():
            raise CliError(f"builder file {str(self.path)!r} does not exist (use create)")
        return load_builder(self.path)

    def save(self, b: RingBuilder) -> None:
        save_builder(self.path, b)

    def emit(self, text: str) -> None:
        self.out.append(text)

    def emit_json(self, obj: dict[str, Any]) -> None:
        self.out.append(json.dumps(obj, sort_keys=True))

    def matching(self, b: RingBuilder, value: str, allow_many: bool) -> list[Device]:
        found = b.search(parse_search(value))
        if not found:
            raise CliError(f"no device matches {value!r}")
        if len(found) > 1 and not allow_many:
            raise CliError(f"{value!r} matches {len(found)} devices; add --yes to change them all")
        return found

    def ring_note(self, b: RingBuilder) -> str:
        ring_path = _ring_path(self.path)
        if not ring_path.exists():
            return f"Ring file {ring_path.name} not found"
        try:
            version = read_ring(ring_path).version
        except RingFileError as exc:
            return f"Ring file {ring_path.name} is unreadable: {exc}"
        state = "up-to-date" if version == b.version else "obsolete"
        return f"Ring file {ring_path.name} is {state}"


def cmd_summary(s: Session, args: list[str]) -> int:
    _, opts = _split(args, set(), {"json"})
    b = s.load()
    data = summary(b)
    if opts.get("json"):
        s.emit_json(data)
    else:
        s.emit(format_summary(s.path.name, data, s.ring_note(b)))
    return EXIT_OK


def cmd_create(s: Session, args: list[str]) -> int:
    pos, opts = _split(args, set(), {"force"})
    if len(pos) != 3:
        raise CliError("usage: create <part_power> <replicas> <min_part_hours>")
    if s.path.exists() and not opts.get("force"):
        raise CliError(f"{str(s.path)!r} already exists; add --force to replace it")
    try:
        replicas = float(pos[1])
    except ValueError:
        raise CliError(f"replicas must be a number, got {pos[1]!r}") from None
    b = RingBuilder(_int(pos[0], "part power"), replicas, _int(pos[2], "min_part_hours"))
    s.save(b)
    return EXIT_OK


_ADD_OPTS = {
    "region", "zone", "ip", "port", "replication-ip", "replication-port", "device", "weight",
    "meta",
}  # fmt: skip


def _add_from_opts(opts: Opts) -> NewDevice:
    for need in ("zone", "ip", "port", "device", "weight"):
        if need not in opts:
            raise CliError(f"add needs --{need}")
    rip = str(opts.get("replication-ip", opts["ip"]))
    rport = opts.get("replication-port", opts["port"])
    text = (
        f"r{_int(opts.get('region', '1'), 'region')}z{_int(opts['zone'], 'zone')}-"
        f"{_bracket(str(opts['ip']))}:{_int(opts['port'], 'port')}"
        f"R{_bracket(rip)}:{_int(rport, 'replication port')}/x"
    )
    base = parse_add(text, parse_weight(str(opts["weight"])))
    device, meta = str(opts["device"]), str(opts.get("meta", ""))
    return replace(base, device=device, meta=meta)


def _bracket(ip: str) -> str:
    return f"[{ip}]" if ":" in ip and not ip.startswith("[") else ip


def cmd_add(s: Session, args: list[str]) -> int:
    pos, opts = _split(args, _ADD_OPTS, set())
    if opts and pos:
        raise CliError("add takes either <device> <weight> pairs or long options, not both")
    if opts:
        new = [_add_from_opts(opts)]
    elif pos and len(pos) % 2 == 0:
        new = [parse_add(pos[i], parse_weight(pos[i + 1])) for i in range(0, len(pos), 2)]
    else:
        raise CliError("usage: add <r<region>z<zone>-<ip>:<port>/<device>> <weight> [...]")
    b = s.load()
    added = [b.add(n) for n in new]  # all or nothing: the file is saved only if every add worked
    s.save(b)
    for d in added:
        s.emit(f"Device {d.label()} with {d.weight:.2f} weight got id {d.id}")
    return EXIT_OK


def cmd_remove(s: Session, args: list[str]) -> int:
    pos, opts = _split(args, set(), {"yes"})
    if not pos:
        raise CliError("usage: remove <search-value> [...]")
    b = s.load()
    for value in pos:
        for d in s.matching(b, value, bool(opts.get("yes"))):
            b.remove(d.id)
            s.emit(f"Device {d.label()} (id {d.id}) marked for removal")
    s.save(b)
    return EXIT_OK


def cmd_set_weight(s: Session, args: list[str]) -> int:
    pos, opts = _split(args, set(), {"yes"})
    if not pos or len(pos) % 2:
        raise CliError("usage: set_weight <search-value> <weight> [...]")
    b = s.load()
    for i in range(0, len(pos), 2):
        weight = parse_weight(pos[i + 1])
        for d in s.matching(b, pos[i], bool(opts.get("yes"))):
            b.set_weight(d.id, weight)
            s.emit(f"{d.label()} (id {d.id}) weight set to {weight:.2f}")
    s.save(b)
    return EXIT_OK


_CHANGE_OPTS = {
    "change-ip", "change-port", "change-replication-ip", "change-replication-port",
    "change-device", "change-meta",
}  # fmt: skip


def _change_from_opts(opts: Opts) -> DeviceChange:
    text = ""
    if "change-ip" in opts:
        text += _bracket(str(opts["change-ip"]))
    if "change-port" in opts:
        text += f":{_int(opts['change-port'], 'port')}"
    if "change-replication-ip" in opts or "change-replication-port" in opts:
        text += "R" + _bracket(str(opts.get("change-replication-ip", "")))
        if "change-replication-port" in opts:
            text += f":{_int(opts['change-replication-port'], 'replication port')}"
    if "change-device" in opts:
        text += f"/{opts['change-device']}"
    base = parse_change(text) if text else DeviceChange()
    meta = opts.get("change-meta")
    change = DeviceChange(
        ip=base.ip,
        port=base.port,
        replication_ip=base.replication_ip,
        replication_port=base.replication_port,
        device=base.device,
        meta=None if meta is None else str(meta),
    )
    if change.is_empty():
        raise CliError("set_info needs a change value or --change-* options")
    return change


def cmd_set_info(s: Session, args: list[str]) -> int:
    pos, opts = _split(args, _CHANGE_OPTS, {"yes"})
    change_opts = {k: v for k, v in opts.items() if k != "yes"}
    if change_opts:
        if len(pos) != 1:
            raise CliError("usage: set_info <search-value> --change-ip ... ")
        pairs = [(pos[0], _change_from_opts(change_opts))]
    elif pos and len(pos) % 2 == 0:
        pairs = [(pos[i], parse_change(pos[i + 1])) for i in range(0, len(pos), 2)]
    else:
        raise CliError("usage: set_info <search-value> <ip:port/device_meta> [...]")
    b = s.load()
    for value, change in pairs:
        for d in s.matching(b, value, bool(opts.get("yes"))):
            new = b.set_info(d.id, change)
            s.emit(f"Device {d.label()} is now {new.label()}")
    s.save(b)
    return EXIT_OK


def cmd_search(s: Session, args: list[str]) -> int:
    pos, opts = _split(args, set(), {"json"})
    if len(pos) != 1:
        raise CliError("usage: search <search-value>")
    b = s.load()
    found = s.matching(b, pos[0], allow_many=True)
    rows = device_rows(b, found)
    if opts.get("json"):
        s.emit_json({"devices": rows})
    else:
        s.emit("Devices:")
        s.emit("\n".join("  " + line for line in format_devices(rows)))
    return EXIT_OK


def cmd_list_parts(s: Session, args: list[str]) -> int:
    pos, opts = _split(args, set(), {"json"})
    if not pos:
        raise CliError("usage: list_parts <search-value> [...]")
    b = s.load()
    if not b.rebalanced:
        raise CliError("the builder has not been rebalanced yet")
    devs = [d for value in pos for d in s.matching(b, value, allow_many=True)]
    parts = b.list_parts(devs)
    if opts.get("json"):
        s.emit_json({"partitions": [{"partition": p, "matches": n} for p, n in parts]})
    else:
        s.emit("Partition   Matches")
        s.emit("\n".join(f"{p:9d}   {n:7d}" for p, n in parts))
    return EXIT_OK


def _progress(enabled: bool) -> Callable[[str], None]:
    start = time.monotonic()

    def say(msg: str) -> None:
        if enabled:
            print(f"rebalance: {msg} ({time.monotonic() - start:.1f}s)", file=sys.stderr)

    return say


def cmd_rebalance(s: Session, args: list[str]) -> int:
    pos, opts = _split(args, {"seed"}, {"json", "force"})
    if pos:
        raise CliError(f"rebalance takes no arguments, got {pos[0]!r}")
    seed = _int(opts["seed"], "seed") if "seed" in opts else None
    b = s.load()
    say = _progress(b.partitions >= _PROGRESS_PARTITIONS_MIN)
    result = b.rebalance(seed=seed, progress=say)
    s.save(b)
    write_ring(_ring_path(s.path), b.ring_data())
    say("saved builder and ring")
    if opts.get("json"):
        data = summary(b)
        data.update(moved=result.moved, partitions_moved=result.partitions_moved)
        s.emit_json(data)
    else:
        s.emit(
            f"Reassigned {result.moved} partition-replicas ({result.partitions_moved} "
            f"partitions). Balance is now {result.balance:.2f}. "
            f"Dispersion is now {result.dispersion:.2f}"
        )
        if result.crowded_after_placement:
            s.emit(
                f"{result.crowded_after_placement} replicas could not be placed without "
                "crowding a failure domain; run rebalance again after min_part_hours"
            )
    return EXIT_OK if result.moved else EXIT_WARNING


def cmd_dispersion(s: Session, args: list[str]) -> int:
    _, opts = _split(args, set(), {"json"})
    b = s.load()
    report = b.dispersion()
    if opts.get("json"):
        data = summary(b)
        data["crowded_partitions"] = report.crowded
        s.emit_json(data)
        return EXIT_OK
    s.emit(
        f"Dispersion is {report.percent:.2f}: {report.crowded} of {report.partitions} "
        "partitions have replicas crowding a failure domain"
    )
    s.emit("\n".join(f"  {tier:>7}: {n}" for tier, n in report.by_tier.items()))
    return EXIT_OK


def cmd_validate(s: Session, args: list[str]) -> int:
    _split(args, set(), set())
    b = s.load()
    b.validate()
    s.emit("Builder is valid")
    return EXIT_OK


def cmd_write_ring(s: Session, args: list[str]) -> int:
    _split(args, set(), set())
    b = s.load()
    ring_path = _ring_path(s.path)
    write_ring(ring_path, b.ring_data())
    s.emit(f"Wrote {ring_path}")
    return EXIT_OK


def cmd_pretend(s: Session, args: list[str]) -> int:
    _split(args, set(), set())
    b = s.load()
    b.pretend_min_part_hours_passed()
    s.save(b)
    return EXIT_OK


def cmd_set_min_part_hours(s: Session, args: list[str]) -> int:
    pos, _ = _split(args, set(), set())
    if len(pos) != 1:
        raise CliError("usage: set_min_part_hours <hours>")
    b = s.load()
    b.set_min_part_hours(_int(pos[0], "min_part_hours"))
    s.save(b)
    return EXIT_OK


def _overload(text: str) -> float | None:
    if text.lower() in ("none", "unlimited"):
        return None
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise CliError(
            f"overload must be a fraction, a percentage or 'none', got {text!r}"
        ) from None


def cmd_set_overload(s: Session, args: list[str]) -> int:
    pos, _ = _split(args, set(), set())
    if len(pos) != 1:
        raise CliError("usage: set_overload <fraction>|<percent>%|none")
    b = s.load()
    b.set_overload(_overload(pos[0]))
    s.save(b)
    return EXIT_OK


VERBS: dict[str, Callable[[Session, list[str]], int]] = {
    "create": cmd_create,
    "add": cmd_add,
    "remove": cmd_remove,
    "set_weight": cmd_set_weight,
    "set_info": cmd_set_info,
    "search": cmd_search,
    "list_parts": cmd_list_parts,
    "rebalance": cmd_rebalance,
    "dispersion": cmd_dispersion,
    "validate": cmd_validate,
    "write_ring": cmd_write_ring,
    "pretend_min_part_hours_passed": cmd_pretend,
    "set_min_part_hours": cmd_set_min_part_hours,
    "set_overload": cmd_set_overload,
}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__, file=sys.stderr if not args else sys.stdout)
        return EXIT_ERROR if not args else EXIT_OK
    session = Session(Path(args[0]))
    if len(args) > 1 and not args[1].startswith("--"):
        verb, rest = args[1], args[2:]
        if verb not in VERBS:
            print(f"error: unknown command {verb!r} (try --help)", file=sys.stderr)
            return EXIT_ERROR
        handler = VERBS[verb]
    else:
        handler, rest = cmd_summary, args[1:]
    try:
        code = handler(session, rest)
    except (CliError, RingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"error: {exc.strerror or exc} ({exc.filename or session.path})", file=sys.stderr)
        return EXIT_ERROR
    try:
        for text in session.out:
            print(text)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `cairn-ring x.builder | head`: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return code


if __name__ == "__main__":
    sys.exit(main())
