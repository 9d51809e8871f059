"""Who is on the other end of a session, and what each kind of peer may ask for.

Nodes are full members: they may send anything (replica traffic, push-pull, relayed client
requests). A node is never a *client role*: operators act through client capabilities, so an
audit line always names either a node doing its job or a capability someone issued.
Clients get exactly what their role allows, only for keys under their prefix, and never a
node-to-node message — the table below is an allow-list, so a new message type is refused to
clients until someone decides its role here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from p2pindex.security.certs import ClientCapability, NodeCertificate, Role, when
from p2pindex.security.errors import AccessDenied
from p2pindex.types import key_text
from p2pindex.wire.messages import (
    AdmitRequest,
    DeleteRequest,
    ExplainRequest,
    GetRequest,
    LeaveRequest,
    LimitsRequest,
    MembersRequest,
    Message,
    PutRequest,
    QueryRequest,
    RemoveRequest,
    RevocationPush,
    StatusRequest,
)

_RANK = {Role.READ: 0, Role.WRITE: 1, Role.ADMIN: 2}

REQUIRED_ROLE: dict[type[Message], Role] = {
    GetRequest: Role.READ,
    StatusRequest: Role.READ,
    MembersRequest: Role.READ,
    ExplainRequest: Role.READ,
    LimitsRequest: Role.READ,
    QueryRequest: Role.READ,
    PutRequest: Role.WRITE,
    DeleteRequest: Role.WRITE,
    LeaveRequest: Role.ADMIN,
    RemoveRequest: Role.ADMIN,
    AdmitRequest: Role.ADMIN,
    RevocationPush: Role.ADMIN,
}
OPERATION_NAMES: dict[type[Message], str] = {
    GetRequest: "get",
    StatusRequest: "status",
    MembersRequest: "reading the member list",
    ExplainRequest: "explain",
    LimitsRequest: "reading the limits",
    PutRequest: "put",
    DeleteRequest: "delete",
    LeaveRequest: "leave",
    RemoveRequest: "remove",
    RevocationPush: "revoke",
}
"""What a person calls each request, for messages."""


def operation_name(message: Message) -> str:
    return OPERATION_NAMES.get(type(message), f"node-to-node request (type {message.TYPE})")


ADMIN_MESSAGES = frozenset(m for m, role in REQUIRED_ROLE.items() if role is Role.ADMIN)
_KEYED = (GetRequest, PutRequest, DeleteRequest, ExplainRequest)


class PeerKind(enum.Enum):
    NODE = "node"
    CLIENT = "client"


@dataclass(frozen=True, slots=True)
class Peer:
    """The authenticated other end of a session (what its credential says, nothing more)."""

    kind: PeerKind
    credential: NodeCertificate | ClientCapability

    @property
    def node_id(self) -> str | None:
        credential = self.credential
        return credential.node_id if isinstance(credential, NodeCertificate) else None

    @property
    def serial(self) -> int:
        return self.credential.serial

    @property
    def name(self) -> str:
        credential = self.credential
        if isinstance(credential, NodeCertificate):
            return f"node {credential.node_id}"
        return f"client {credential.public_key[:8].hex()} ({credential.role.value})"

    def describe(self) -> dict[str, object]:
        """The audit-log view of this peer."""
        credential = self.credential
        doc: dict[str, object] = {"kind": self.kind.value, "serial": credential.serial}
        if isinstance(credential, NodeCertificate):
            doc["node_id"] = credential.node_id
        else:
            doc["client_key"] = credential.public_key.hex()
            doc["role"] = credential.role.value
            doc["prefix"] = credential.prefix.hex()
        return doc


def authorize(peer: Peer, message: Message, now: float) -> None:
    """Return if ``peer`` may send ``message``; raise AccessDenied saying why not."""
    credential = peer.credential
    if isinstance(credential, NodeCertificate):
        return
    name = operation_name(message)
    if credential.expires <= now:
        raise AccessDenied(
            "expired", f"the client capability expired at {when(credential.expires)}"
        )
    required = REQUIRED_ROLE.get(type(message))
    if required is None:
        raise AccessDenied("node_only", f"{name} is for nodes only; no client capability allows it")
    if _RANK[credential.role] < _RANK[required]:
        raise AccessDenied(
            "role",
            f"{name} needs the {required.value} role, but this client's capability has the "
            f"{credential.role.value} role (issue one with `p2pindex token issue --role "
            f"{required.value}`)",
        )
    if (
        credential.prefix
        and isinstance(message, QueryRequest)
        and not message.prefix.startswith(credential.prefix)
    ):
        # Every answer's key starts with the query's prefix (nodes filter by it), so a
        # query inside the capability's prefix sees nothing outside it.
        asked = key_text(message.prefix) if message.prefix else "every key: no prefix"
        raise AccessDenied(
            "prefix",
            f"this capability reads only keys under {key_text(credential.prefix)}; query with "
            f"a prefix inside it (asked for {asked})",
        )
    if credential.prefix and isinstance(message, _KEYED):
        key: bytes = message.key
        if not key.startswith(credential.prefix):
            raise AccessDenied(
                "prefix",
                f"{name} of key {key_text(key)} refused: this client's capability covers only "
                f"the key prefix {key_text(credential.prefix)}",
            )
