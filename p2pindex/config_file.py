"""A node's settings from a TOML file (`serve --config node.toml`), overridden by flags.

Every setting a node has is listed once in ``SETTINGS`` (name, type, default, meaning); the
file, the flags and `p2pindex config show` all go through that table, so a setting cannot
exist in one and be missing from another. Reading is strict: an unknown key or a value of
the wrong type is one error naming the key (and the file), raised before anything starts,
because a misspelt setting silently left at its default is the worst kind of config bug.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pindex.config import AdmissionLimits, HttpConfig, Limits, NodeConfig, TermLimits
from p2pindex.errors import ConfigError
from p2pindex.types import Address

_LIMITS = Limits()
_ADMISSION = AdmissionLimits()
_TERMS = TermLimits()


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    """Dotted: ``section.key`` for keys inside a TOML table."""
    kind: str
    default: object
    help: str
    choices: tuple[str, ...] = ()


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", "path", None, "directory for the node's key and data (required)"),
    Setting("listen", "address", Address("127.0.0.1", 7400), "HOST:PORT for TCP and UDP"),
    Setting("advertise", "address", None, "HOST:PORT other nodes use to reach this one"),
    Setting("seeds", "addresses", [], "existing members to join through"),
    Setting("cluster", "str", "p2pindex", "cluster name; nodes of other clusters are refused"),
    Setting("n_replicas", "int", 3, "replicas kept of every key (the same on every node)"),
    Setting("fsync", "bool", False, "fsync every commit (acknowledged writes survive power loss)"),
    Setting("request_timeout", "seconds", 5.0, "deadline of a request whose client gives none"),
    Setting("replica_timeout", "seconds", 2.0, "how long a coordinator waits for one replica"),
    Setting("remove_dead_after", "seconds_or_off", None,
            "take a member dead this long out of the ring (false: never)"),
    Setting("anti_entropy_interval", "seconds_or_off", 5.0,
            "mean seconds between anti-entropy rounds (false: off)"),
    Setting("hint_max_bytes_per_target", "int", 256 * 1024 * 1024,
            "hint budget per unreachable node, in bytes"),
    Setting("hint_max_age", "seconds", 3 * 24 * 3600.0, "hints older than this are dropped"),
    Setting("tombstone_grace", "seconds_or_off", 3600.0,
            "seconds a tombstone is kept at least before it may be reaped (false: never)"),
    Setting("replace", "str", None, "id of a dead member this new node replaces"),
    Setting("insecure", "bool", False, "no authentication or encryption (tests only)"),
    Setting("trust_file", "path", None, "trust file (default DATA_DIR/cluster.trust)"),
    Setting("certificate_file", "path", None, "node certificate (default DATA_DIR/node.cert)"),
    Setting("log_level", "choice", "info", "log verbosity",
            ("debug", "info", "warning", "error")),
    Setting("log_format", "choice", "text", "log line format", ("text", "json")),
    Setting("limits.max_value", "int", _LIMITS.max_value, "largest value accepted, in bytes"),
    Setting("limits.max_key", "int", _LIMITS.max_key, "largest key accepted, in bytes"),
    Setting("limits.max_frame", "int", None,
            "largest protocol frame (default: 16 MiB or max_value + 64 KiB)"),
    Setting("limits.sibling_warn", "int", _LIMITS.sibling_warn,
            "siblings at which a write is answered with a warning"),
    Setting("limits.sibling_max", "int", _LIMITS.sibling_max,
            "siblings above which a write is refused"),
    Setting("limits.max_record", "int", None,
            "largest record (all siblings of a key), in bytes (default: a quarter of max_frame)"),
    Setting("limits.reply_budget", "int", _LIMITS.reply_budget,
            "unsent reply bytes per connection before it stops being read"),
    Setting("limits.node_in_flight", "int", _LIMITS.node_in_flight,
            "request and reply bytes held for all connections before clients that pipeline "
            "get 'overloaded' (everyone a quarter above it)"),
    Setting("admission.max_connections", "int", _ADMISSION.max_connections,
            "open client connections served at once (the cluster's nodes are never refused)"),
    Setting("admission.max_client_connections", "int", _ADMISSION.max_client_connections,
            "open connections of one client key"),
    Setting("admission.client_rate", "rate_or_off", None,
            "requests a second one client key may send on average (false: no limit)"),
    Setting("admission.client_burst", "int", _ADMISSION.client_burst,
            "requests a client key may send at once above its rate"),
    Setting("admission.max_handshakes", "int", _ADMISSION.max_handshakes,
            "connections in their handshake at once; one more closes the one waiting longest"),
    Setting("admission.broken_sessions", "int", _ADMISSION.broken_sessions,
            "sessions of a client key closed for unreadable frames before its new "
            "handshakes are refused (0: never)"),
    Setting("admission.broken_session_interval", "seconds", _ADMISSION.broken_session_interval,
            "seconds after which a refused client key may open one more session"),
    Setting("terms.max_terms", "int", _TERMS.max_terms,
            "index terms one object version may carry, over all its indexes"),
    Setting("terms.max_term_bytes", "int", _TERMS.max_term_bytes, "largest index term, in bytes"),
    Setting("terms.max_name_chars", "int", _TERMS.max_name_chars,
            "longest index name, in characters"),
    Setting("http.listen", "address", None, "HOST:PORT of the HTTP API (unset: no HTTP)"),
    Setting("http.tls_cert", "path", None, "TLS certificate (PEM) of the HTTP listener"),
    Setting("http.tls_key", "path", None, "private key (PEM) of http.tls_cert"),
    Setting("http.insecure", "bool", False, "allow plain HTTP on a non-loopback address"),
    Setting("http.request_deadline", "seconds", 10.0,
            "seconds a client has to send a whole request"),
    Setting("http.idle_timeout", "seconds", 60.0, "idle keep-alive connections are closed after"),
    Setting("http.max_connections", "int", 1024,
            "open HTTP connections at most; at the limit the one waiting longest for its "
            "request is closed to admit a new one"),
    Setting("http.max_header_bytes", "int", 16 * 1024, "largest request head, in bytes"),
)  # fmt: skip
BY_NAME = {setting.name: setting for setting in SETTINGS}
SECTIONS = {name.split(".")[0] for name in BY_NAME if "." in name}


def _convert(setting: Setting, value: object, where: str) -> object:
    """The typed value of ``setting``, or ConfigError naming it and what was wrong."""

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{where}: {setting.name} must be {expected}, not {value!r}")

    kind = setting.kind
    if kind == "addresses":
        if type(value) is not list:
            raise bad('a list of "HOST:PORT" strings')
        item = Setting(setting.name, "address", None, "")
        return [_convert(item, one, where) for one in value]
    if kind in ("str", "choice", "path", "address"):
        return _text(setting, value, where, bad)
    return _scalar(kind, value, bad)


def _scalar(kind: str, value: object, bad: Callable[[str], ConfigError]) -> object:
    """A bool, a count, a duration or a rate."""
    if kind == "bool":
        if type(value) is not bool:
            raise bad("true or false")
        return value
    if kind == "int":
        if type(value) is not int:
            raise bad("a whole number")
        if value < 0:
            raise bad("zero or more")
        return value
    if kind == "rate_or_off":
        if value is False:
            return None
        if type(value) not in (int, float) or not value > 0:  # type: ignore[operator]
            raise bad("a positive number of requests a second, or false")
        return float(value)  # type: ignore[arg-type]
    if kind in ("seconds", "seconds_or_off"):
        if kind == "seconds_or_off" and value is False:
            return None
        if type(value) not in (int, float) or not value > 0:  # type: ignore[operator]
            raise bad("a positive number of seconds" + (" or false" if "off" in kind else ""))
        return float(value)  # type: ignore[arg-type]
    raise AssertionError(kind)


def _text(setting: Setting, value: object, where: str, bad: Callable[[str], ConfigError]) -> object:
    """A string, one of the setting's choices, a path or an address."""
    if type(value) is not str or not value:
        raise bad("a non-empty string")
    if setting.kind == "choice" and value not in setting.choices:
        raise bad("one of " + ", ".join(setting.choices))
    if setting.kind == "path":
        return Path(value)
    if setting.kind == "address":
        try:
            return Address.parse(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: {setting.name}: {exc}") from None
    return value


def read_file(path: Path) -> dict[str, object]:
    """The settings a TOML file sets (dotted names, typed values); strict about keys."""
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    values: dict[str, object] = {}
    for key, value in document.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: [{key}] must be a table")
            for inner, inner_value in value.items():
                values[_known(f"{key}.{inner}", path)] = inner_value
        else:
            values[_known(key, path)] = value
    return {name: _convert(BY_NAME[name], value, str(path)) for name, value in values.items()}


def _known(name: str, path: Path) -> str:
    if name not in BY_NAME:
        section = name.rpartition(".")[0]
        known = sorted(n for n in BY_NAME if n.rpartition(".")[0] == section)
        where = f"[{section}]" if section else "the top level"
        raise ConfigError(
            f"{path}: unknown setting {name!r}; settings in {where}: "
            + ", ".join(n.rpartition(".")[2] for n in known)
        )
    return name


def effective(file_values: Mapping[str, object], overrides: Mapping[str, object]) -> dict:
    """Defaults, then the file, then the flags that were given (None: not given)."""
    values: dict[str, object] = {setting.name: setting.default for setting in SETTINGS}
    values.update(file_values)
    values.update({name: value for name, value in overrides.items() if value is not None})
    return values


def node_config(values: Mapping[str, Any]) -> NodeConfig:
    """The NodeConfig these settings describe (ConfigError for a missing or bad one)."""
    if values["data_dir"] is None:
        raise ConfigError("data_dir is not set: give --data-dir or data_dir in the config file")
    max_value = values["limits.max_value"]
    max_frame = values["limits.max_frame"]
    if max_frame is None:
        # A record (all siblings) is at most a quarter of a frame, and must hold one value.
        max_frame = max(_LIMITS.max_frame, 4 * (max_value + 64 * 1024))
    limits = Limits(
        max_frame=max_frame,
        max_key=values["limits.max_key"],
        max_value=max_value,
        sibling_warn=values["limits.sibling_warn"],
        sibling_max=values["limits.sibling_max"],
        max_record=values["limits.max_record"],
        reply_budget=values["limits.reply_budget"],
        node_in_flight=values["limits.node_in_flight"],
    )
    admission = AdmissionLimits(
        max_connections=values["admission.max_connections"],
        max_client_connections=values["admission.max_client_connections"],
        client_rate=values["admission.client_rate"],
        client_burst=values["admission.client_burst"],
        max_handshakes=values["admission.max_handshakes"],
        broken_sessions=values["admission.broken_sessions"],
        broken_session_interval=values["admission.broken_session_interval"],
    )
    http = None
    if values["http.listen"] is not None:
        http = HttpConfig(
            values["http.listen"],
            values["http.tls_cert"],
            values["http.tls_key"],
            insecure=values["http.insecure"],
            request_deadline=values["http.request_deadline"],
            idle_timeout=values["http.idle_timeout"],
            max_connections=values["http.max_connections"],
            max_header_bytes=values["http.max_header_bytes"],
        )
    return NodeConfig(
        data_dir=values["data_dir"],
        listen=values["listen"],
        advertise=values["advertise"],
        seeds=tuple(values["seeds"]),
        cluster=values["cluster"],
        n_replicas=values["n_replicas"],
        limits=limits,
        fsync=values["fsync"],
        request_timeout=values["request_timeout"],
        replica_timeout=values["replica_timeout"],
        remove_dead_after=values["remove_dead_after"],
        anti_entropy_interval=values["anti_entropy_interval"],
        hint_max_bytes_per_target=values["hint_max_bytes_per_target"],
        hint_max_age=values["hint_max_age"],
        tombstone_grace=values["tombstone_grace"],
        replace=values["replace"],
        insecure=values["insecure"],
        trust_file=values["trust_file"],
        certificate_file=values["certificate_file"],
        http=http,
        admission=admission,
        term_limits=_term_limits(values),
    )


def _term_limits(values: Mapping[str, Any]) -> TermLimits:
    try:
        return TermLimits(
            max_terms=values["terms.max_terms"],
            max_term_bytes=values["terms.max_term_bytes"],
            max_name_chars=values["terms.max_name_chars"],
        )
    except ValueError as exc:
        raise ConfigError(f"terms: {exc}") from None


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(values: Mapping[str, object], source: Callable[[str], str]) -> str:
    """The effective settings as TOML, each with where it came from and what it means."""
    lines: list[str] = []
    section = ""
    for setting in SETTINGS:
        head, _, key = setting.name.rpartition(".")
        if head != section:
            section = head
            lines += ["", f"[{section}]"]
        value = values[setting.name]
        text = _toml_value(value)
        if value is None and setting.kind in ("seconds_or_off", "rate_or_off"):
            lines.append(f"{key} = false  # {setting.help} [{source(setting.name)}]")
        elif value is None:
            lines.append(f"# {key} = (unset)  # {setting.help} [{source(setting.name)}]")
        else:
            lines.append(f"{key} = {text}  # {setting.help} [{source(setting.name)}]")
    return "\n".join(lines).lstrip() + "\n"
