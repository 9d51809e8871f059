"""`--trace` on put, get and delete: the coordinator's steps, as lines for people.

The node records its steps as documents (``p2pindex.node.trace``); this turns the ones it
records today into words (replicas asked and whom a fallback stands in for, who answered
when, read repairs sent) and shows any other step's details as ``name=value``, so a step a
newer node adds is still shown rather than dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from p2pindex.client import Trace, TraceStep
from p2pindex.errors import P2PIndexError

MAX_NESTED = 2
"""A relayed request shows the relay's steps indented under it, this deep at most."""


def trace_lines(trace: Trace) -> list[str]:
    """The trace as text: a heading, then one line per step (time since the request reached
    the coordinator, time since the previous step, what happened)."""
    lines = [
        f"trace of request {trace.request_id} "
        "(ms since the coordinator got it, ms since the previous step):"
    ]
    lines += _step_lines(trace.steps, "  ", 0)
    return lines


def _step_lines(steps: tuple[TraceStep, ...], indent: str, depth: int) -> list[str]:
    lines = []
    for step in steps:
        lines.append(
            f"{indent}{step.at_ms:9.3f} {'+' + format(step.took_ms, '.3f'):>10}  "
            f"{describe_step(step)}"
        )
        nested = step.details.get("steps")
        if step.step == "relay_answered" and isinstance(nested, list) and depth < MAX_NESTED:
            try:
                inner = Trace.from_document({"request_id": "", "steps": nested}).steps
            except P2PIndexError:
                continue
            lines.append(f"{indent}  steps on {step.details.get('node', 'the relay')}:")
            lines += _step_lines(inner, indent + "    ", depth + 1)
    return lines


def describe_step(step: TraceStep) -> str:
    details = dict(step.details)
    node = details.pop("node", None)
    if step.step == "targets":
        nodes = details.pop("nodes", [])
        required = details.pop("required", "?")
        text = f"asked {_targets(nodes)}; {required} must answer"
    elif step.step == "replica_answered":
        reply = details.pop("reply", "")
        text = f"{node} answered{_reply(reply)}"
    elif step.step == "replica_failed":
        text = f"{node} failed: {details.pop('error', 'no reason given')}"
    elif step.step == "committed_locally":
        text = f"committed on the coordinator {node}"
    elif step.step == "relayed":
        text = f"relayed to {node}, which holds the key"
    elif step.step == "relay_answered":
        details.pop("steps", None)
        text = f"{node} answered the relayed request"
    elif step.step == "unavailable":
        required = details.pop("required", "?")
        text = f"refused before asking any replica ({required} must answer): "
        text += str(details.pop("reason", "too few replicas usable"))
    elif step.step == "read_first":
        what = "delete" if details.pop("delete", False) else "overwrite"
        text = f"no context given: reads the key first, then writes the {what} with its context"
    elif step.step == "decided":
        outcome = str(details.pop("outcome", "?")).replace("_", " ")
        text = f"decided: {outcome}"
        acks = details.pop("acks", None)
        if acks is not None:
            text += f" with {acks} acknowledgement(s)"
        unanswered = details.pop("unanswered", None)
        if unanswered:
            text += f"; not answered yet: {', '.join(map(str, unanswered))}"
        repaired = details.pop("read_repair_to", None)
        if repaired is not None:
            text += f"; read repair sent to {', '.join(repaired)}" if repaired else "; no repair"
    else:
        text = step.step.replace("_", " ") + (f" {node}" if node is not None else "")
    extra = " ".join(f"{name}={_plain(value)}" for name, value in sorted(details.items()))
    return f"{text} {extra}" if extra else text


def _targets(nodes: object) -> str:
    if not isinstance(nodes, list) or not nodes:
        return "no replica"
    parts = []
    for target in nodes:
        if not isinstance(target, Mapping):
            parts.append(_plain(target))
            continue
        name = str(target.get("node"))
        stands_in = target.get("hint_for")
        parts.append(f"{name} (fallback for {stands_in}, keeps a hint)" if stands_in else name)
    return ", ".join(parts)


def _reply(reply: object) -> str:
    return {
        "ReplicaAck": " (write stored)",
        "ReplicaReadReply": " (its copy)",
        "ReplicaReadManyReply": " (its copy)",
        "ReplicaDigestManyReply": " (a digest of its copy)",
    }.get(str(reply), f" ({reply})" if reply else "")


def _plain(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(_plain(item) for item in value)
    return str(value)
