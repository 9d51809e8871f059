"""A node's settings from a TOML file (`serve --config node.toml`), overridden by flags.

Every setting a node has is listed once in ``SETTINGS`` (name, type, default, meaning); the
file, the flags and `p2pindex config show` all go through that table, so a setting cannot
exist in one and be missing from another. Reading is strict: an unknown key or a value of
the wrong type is one error naming the key (and the file), raised before anything starts,
because a misspelt setting silently left at its default is the worst kind of config bug.
"""

from __future__ import annotations

import contextlib
import os
import tomllib
from collections.abc import Callable, Iterator, Mapping
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
    low: int = 0
    """Least value of an ``int`` setting (the config objects refuse less)."""
    high: int | None = None
    """Largest value of an ``int`` setting, if it has one."""


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", "path", None, "directory for the node's key and data (required)"),
    Setting("listen", "address", Address("127.0.0.1", 7400), "HOST:PORT for TCP and UDP"),
    Setting("advertise", "address", None, "HOST:PORT other nodes use to reach this one"),
    Setting("seeds", "addresses", [], "existing members to join through"),
    Setting("cluster", "str", "p2pindex", "cluster name; nodes of other clusters are refused"),
    Setting("n_replicas", "int", 3, "replicas kept of every key (the same on every node)",
            low=1, high=16),
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
    Setting("limits.max_value", "int", _LIMITS.max_value, "largest value accepted, in bytes",
            low=1),
    Setting("limits.max_key", "int", _LIMITS.max_key, "largest key accepted, in bytes", low=1),
    Setting("limits.max_frame", "int", None,
            "largest protocol frame (default: 16 MiB or max_value + 64 KiB)", low=1),
    Setting("limits.sibling_warn", "int", _LIMITS.sibling_warn,
            "siblings at which a write is answered with a warning", low=1),
    Setting("limits.sibling_max", "int", _LIMITS.sibling_max,
            "siblings above which a write is refused", low=1),
    Setting("limits.max_record", "int", None,
            "largest record (all siblings of a key), in bytes (default: a quarter of max_frame)",
            low=1),
    Setting("limits.reply_budget", "int", _LIMITS.reply_budget,
            "unsent reply bytes per connection before it stops being read", low=1),
    Setting("limits.node_in_flight", "int", _LIMITS.node_in_flight,
            "request and reply bytes held for all connections before clients that pipeline "
            "get 'overloaded' (everyone a quarter above it)", low=1),
    Setting("admission.max_connections", "int", _ADMISSION.max_connections,
            "open client connections served at once (the cluster's nodes are never refused)",
            low=1),
    Setting("admission.max_client_connections", "int", _ADMISSION.max_client_connections,
            "open connections of one client key", low=1),
    Setting("admission.client_rate", "rate_or_off", None,
            "requests a second one client key may send on average (false: no limit)"),
    Setting("admission.client_burst", "int", _ADMISSION.client_burst,
            "requests a client key may send at once above its rate", low=1),
    Setting("admission.max_handshakes", "int", _ADMISSION.max_handshakes,
            "connections in their handshake at once; one more closes the one waiting longest",
            low=1),
    Setting("admission.broken_sessions", "int", _ADMISSION.broken_sessions,
            "sessions of a client key closed for unreadable frames before its new "
            "handshakes are refused (0: never)"),
    Setting("admission.broken_session_interval", "seconds", _ADMISSION.broken_session_interval,
            "seconds after which a refused client key may open one more session"),
    Setting("terms.max_terms", "int", _TERMS.max_terms,
            "index terms one object version may carry, over all its indexes",
            low=1, high=1 << 16),
    Setting("terms.max_term_bytes", "int", _TERMS.max_term_bytes, "largest index term, in bytes",
            low=1, high=1 << 16),
    Setting("terms.max_name_chars", "int", _TERMS.max_name_chars,
            "longest index name, in characters", low=1, high=1 << 16),
    Setting("http.listen", "address", None, "HOST:PORT of the HTTP API (unset: no HTTP)"),
    Setting("http.tls_cert", "path", None, "TLS certificate (PEM) of the HTTP listener"),
    Setting("http.tls_key", "path", None, "private key (PEM) of http.tls_cert"),
    Setting("http.insecure", "bool", False, "allow plain HTTP on a non-loopback address"),
    Setting("http.request_deadline", "seconds", 10.0,
            "seconds a client has to send a whole request"),
    Setting("http.idle_timeout", "seconds", 60.0, "idle keep-alive connections are closed after"),
    Setting("http.send_timeout", "seconds", 30.0,
            "seconds a client has to take an answer; one that stops reading is cut off"),
    Setting("http.max_connections", "int", 1024,
            "open HTTP connections at most; at the limit the one waiting longest for its "
            "request is closed to admit a new one", low=1, high=100_000),
    Setting("http.max_header_bytes", "int", 16 * 1024, "largest request head, in bytes",
            low=1024, high=1024 * 1024),
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
    return _scalar(setting, value, bad)


def _range_text(setting: Setting) -> str:
    """The values an ``int`` setting takes, in the words of its error message."""
    if setting.high is not None:
        return f"a whole number in {setting.low}..{setting.high}"
    return (
        "a whole number, zero or more"
        if setting.low == 0
        else f"a whole number, at least {setting.low}"
    )


def _in_range(setting: Setting, value: int) -> bool:
    return setting.low <= value and (setting.high is None or value <= setting.high)


def _scalar(setting: Setting, value: object, bad: Callable[[str], ConfigError]) -> object:
    """A bool, a count, a duration or a rate."""
    kind = setting.kind
    if kind == "bool":
        if type(value) is not bool:
            raise bad("true or false")
        return value
    if kind == "int":
        if type(value) is not int or not _in_range(setting, value):
            raise bad(_range_text(setting))
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
    """A string, one of the setting's choices, a path or an address. A relative path is
    taken as it is here (``read_file`` resolves it against the file's directory)."""
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
    converted = {name: _convert(BY_NAME[name], value, str(path)) for name, value in values.items()}
    return {name: _beside(path, value) for name, value in converted.items()}


def _beside(config: Path, value: object) -> object:
    """A relative path in a config file means a path beside the file, wherever `serve` is
    started from (a relative data_dir once made a directory in the working directory)."""
    if not isinstance(value, Path) or value.is_absolute():
        return value
    return Path(os.path.abspath(config.parent / value))


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


def node_config(
    values: Mapping[str, Any],
    sources: Mapping[str, str] | None = None,
    *,
    need_data_dir: bool = True,
) -> NodeConfig:
    """The NodeConfig these settings describe: exactly the checks `serve` makes (ConfigError
    for a missing or bad one). ``sources`` (setting -> "default", a file, "flag") lets each
    error name where the wrong value came from; `config show` passes ``need_data_dir=False``
    to check everything else of a file that leaves the data directory to a flag."""
    sources = sources or {}
    if values["data_dir"] is None and need_data_dir:
        raise ConfigError("data_dir is not set: give --data-dir or data_dir in the config file")
    if values["data_dir"] is not None:
        check_data_dir(values["data_dir"])
    _check_counts(values, sources)
    with _naming("limits", sources):
        limits = _limits(values)
    with _naming("admission", sources):
        admission = _admission(values)
    with _naming("http", sources):
        http = _http(values)
    with _naming("terms", sources):
        terms = TermLimits(
            max_terms=values["terms.max_terms"],
            max_term_bytes=values["terms.max_term_bytes"],
            max_name_chars=values["terms.max_name_chars"],
        )
    with _naming("", sources):
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
            term_limits=terms,
        )


def check_data_dir(path: Path) -> None:
    """Refuse a data directory that exists as something else (the node would fail to
    create it with a bare "file exists")."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"the data directory {path} is a file, not a directory")


def _check_counts(values: Mapping[str, Any], sources: Mapping[str, str]) -> None:
    """Every whole-number setting within its range, whether from the file or a flag (flags
    are not read through the file's checks), named with where it came from."""
    for setting in SETTINGS:
        value = values[setting.name]
        if setting.kind != "int" or value is None or _in_range(setting, value):
            continue
        origin = sources.get(setting.name, "default")
        name = setting.name
        where = {"default": "", "flag": ""}.get(origin, f"{origin}: ")
        given = " (given as a flag)" if origin == "flag" else ""
        raise ConfigError(f"{where}{name} must be {_range_text(setting)}, not {value!r}{given}")


@contextlib.contextmanager
def _naming(section: str, sources: Mapping[str, str]) -> Iterator[None]:
    """Prefix an error of a config object (which knows its fields, not the file) with
    where its settings came from and the file's section, so the message names both."""
    try:
        yield
    except (ConfigError, ValueError) as exc:
        prefix = f"{section}." if section else ""
        names = [n for n in BY_NAME if (n.startswith(prefix) if section else "." not in n)]
        origins = sorted({sources.get(n, "default") for n in names} - {"default"})
        where = " and ".join("flags" if o == "flag" else o for o in origins)
        table = f"[{section}] " if section else ""
        raise ConfigError(f"{where + ': ' if where else ''}{table}{exc}") from None


def _limits(values: Mapping[str, Any]) -> Limits:
    max_value = values["limits.max_value"]
    max_frame = values["limits.max_frame"]
    if max_frame is None:
        # A record (all siblings) is at most a quarter of a frame, and must hold one value.
        max_frame = max(_LIMITS.max_frame, 4 * (max_value + 64 * 1024))
    return Limits(
        max_frame=max_frame,
        max_key=values["limits.max_key"],
        max_value=max_value,
        sibling_warn=values["limits.sibling_warn"],
        sibling_max=values["limits.sibling_max"],
        max_record=values["limits.max_record"],
        reply_budget=values["limits.reply_budget"],
        node_in_flight=values["limits.node_in_flight"],
    )


def _admission(values: Mapping[str, Any]) -> AdmissionLimits:
    return AdmissionLimits(
        max_connections=values["admission.max_connections"],
        max_client_connections=values["admission.max_client_connections"],
        client_rate=values["admission.client_rate"],
        client_burst=values["admission.client_burst"],
        max_handshakes=values["admission.max_handshakes"],
        broken_sessions=values["admission.broken_sessions"],
        broken_session_interval=values["admission.broken_session_interval"],
    )


def _http(values: Mapping[str, Any]) -> HttpConfig | None:
    if values["http.listen"] is None:
        return None
    return HttpConfig(
        values["http.listen"],
        values["http.tls_cert"],
        values["http.tls_key"],
        insecure=values["http.insecure"],
        request_deadline=values["http.request_deadline"],
        idle_timeout=values["http.idle_timeout"],
        send_timeout=values["http.send_timeout"],
        max_connections=values["http.max_connections"],
        max_header_bytes=values["http.max_header_bytes"],
    )


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
