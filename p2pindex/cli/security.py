"""`p2pindex keygen | cluster init|certify|revoke|rotate|retire | token issue`: the cluster's
keys, certificates, capabilities and revocations.

The authority directory made by `cluster init` is the only secret an operator manages by
hand; everything else is one command away from it (see docs/security.md).
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import trio

from p2pindex.cli.common import EXIT_OK, add_format_option, address_arg, emit
from p2pindex.config import Limits
from p2pindex.errors import ConfigError, ProtocolError
from p2pindex.net.channel import RpcChannel
from p2pindex.net.secure.connector import SecureConnector
from p2pindex.security.authority import CLIENT_LIFETIME, NODE_LIFETIME, Authority
from p2pindex.security.bearer import BearerVerifier, issue_bearer
from p2pindex.security.certs import Role, node_id_of, when
from p2pindex.security.credentials import CREDENTIALS_ENV
from p2pindex.security.keys import (
    generate,
    key_id,
    read_private_key,
    write_file_atomically,
    write_private_key,
)
from p2pindex.security.trust import TrustState
from p2pindex.types import Address
from p2pindex.wire.errors import error_from_reply
from p2pindex.wire.messages import ErrorReply, OkReply, RevocationPush

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_DURATION = re.compile(r"(\d+)([smhdwy])")
_NODE_ID = re.compile(r"[0-9a-f]{16}")
PUSH_CAPABILITY_LIFETIME = 600
"""The short admin capability `cluster revoke` issues itself to push the new list."""


def duration_arg(text: str) -> int:
    """A lifetime such as 30d; it must be positive (a credential that expired at issue, or
    before it, is never what was meant), and the message says so."""
    signed = re.fullmatch(r"([-+]?)(\d+)([smhdwy])", text.strip().lower())
    if signed is not None and (signed.group(1) == "-" or int(signed.group(2)) == 0):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: a lifetime must be positive, e.g. 30d, 12h, 90m, 1y"
        )
    match = _DURATION.fullmatch(text.strip().lower().lstrip("+"))
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: use a number and a unit, e.g. 30d, 12h, 90m, 1y"
        )
    return int(match.group(1)) * _UNITS[match.group(2)]


def node_id_arg(text: str) -> str:
    node_id = text.strip().lower()
    if not _NODE_ID.fullmatch(node_id):
        raise argparse.ArgumentTypeError(f"{text!r} is not a node id (16 hex digits)")
    return node_id


def hex_key_arg(text: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise argparse.ArgumentTypeError(f"{text!r} is not a public key (64 hex digits)")
    return key


def register(subparsers: argparse._SubParsersAction) -> None:
    keygen = subparsers.add_parser(
        "keygen",
        help="create an Ed25519 key file (node or client)",
        description=(
            "Write a new Ed25519 key to FILE (mode 0600) and print its public key and the "
            "node id it stands for. A node key goes to DATA_DIR/node.key."
        ),
    )
    keygen.add_argument(
        "--out", required=True, type=Path, metavar="FILE", help="where to write the key"
    )
    keygen.add_argument("--force", action="store_true", help="replace an existing key file")
    add_format_option(keygen)
    keygen.set_defaults(func=run_keygen)

    cluster = subparsers.add_parser(
        "cluster",
        help="manage the cluster authority: init, certify, revoke, rotate, retire",
        description="Create the cluster authority and use it to admit and revoke nodes.",
    )
    actions = cluster.add_subparsers(dest="action", metavar="ACTION", required=True)

    init = actions.add_parser(
        "init",
        help="create a cluster authority",
        description=(
            "Create DIR with a new authority key (keep it offline) and the trust file that "
            "nodes and clients check certificates against."
        ),
    )
    init.add_argument(
        "--dir",
        required=True,
        type=Path,
        metavar="DIR",
        help="the authority directory to create (keep it secret and backed up)",
    )
    add_format_option(init)
    init.set_defaults(func=run_init)

    certify = actions.add_parser(
        "certify",
        help="issue a node certificate",
        description=(
            "Certify a node key. With --data-dir the node's key is read (or created), and "
            "its certificate, the trust file and the revocation list are written into the "
            "data directory: `p2pindex serve --data-dir DIR` then runs it securely."
        ),
    )
    _authority_option(certify)
    source = certify.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-dir", type=Path, help="the node's data directory")
    source.add_argument("--node-key", type=Path, metavar="FILE", help="a node key file")
    source.add_argument("--public-key", type=hex_key_arg, metavar="HEX", help="a node's public key")
    certify.add_argument(
        "--out", type=Path, metavar="FILE", help="certificate file (with --node-key/--public-key)"
    )
    certify.add_argument(
        "--expires",
        type=duration_arg,
        default=NODE_LIFETIME,
        metavar="DURATION",
        help="lifetime, e.g. 365d (default 365d)",
    )
    add_format_option(certify)
    certify.set_defaults(func=run_certify)

    revoke = actions.add_parser(
        "revoke",
        help="revoke node certificates or client capabilities",
        description=(
            "Sign a new revocation list adding NODE_ID(s) (and --capability serials; with "
            "neither, the current list is re-signed) and, with --node, hand it to that "
            "node, which spreads it to every member. A revoked "
            "node is refused by every member; run `p2pindex remove NODE_ID` once it shows "
            "dead so its ranges are re-replicated."
        ),
    )
    revoke.add_argument(
        "node_ids",
        nargs="*",
        type=node_id_arg,
        metavar="NODE_ID",
        help="id of a node whose certificate to revoke (16 hex digits; several allowed)",
    )
    revoke.add_argument(
        "--capability",
        action="append",
        default=[],
        type=int,
        metavar="SERIAL",
        help="serial of a certificate or capability to revoke (repeatable)",
    )
    _authority_option(revoke)
    revoke.add_argument(
        "--node", type=address_arg, metavar="HOST:PORT", help="a live node to push the list to"
    )
    add_format_option(revoke)
    revoke.set_defaults(func=run_revoke)

    rotate = actions.add_parser(
        "rotate",
        help="start using a new authority key (the old one stays trusted)",
        description=(
            "Create a new authority key, trusted next to the old one. Then copy the trust "
            "file to every node, re-certify nodes, re-issue tokens, and `cluster retire` "
            "the old key (see docs/security.md)."
        ),
    )
    _authority_option(rotate)
    add_format_option(rotate)
    rotate.set_defaults(func=run_rotate)

    retire = actions.add_parser(
        "retire",
        help="stop trusting an old authority key",
        description="Remove an authority key from the trust file after a rotation.",
    )
    _authority_option(retire)
    retire.add_argument("--key", required=True, metavar="KEY_ID", help="authority key id (hex)")
    add_format_option(retire)
    retire.set_defaults(func=run_retire)

    token = subparsers.add_parser(
        "token",
        help="issue client credentials",
        description="Issue signed, expiring client capabilities.",
    )
    token_actions = token.add_subparsers(dest="action", metavar="ACTION", required=True)
    issue = token_actions.add_parser(
        "issue",
        help="write a credentials file for a client",
        description=(
            "Write a credentials file (client key, capability, trusted authorities; mode "
            f"0600). Clients use it with ${CREDENTIALS_ENV}=FILE. Roles: read (get, status, "
            "members, explain), write (+ put, delete), admin (+ leave, remove, revoke)."
        ),
    )
    _authority_option(issue)
    issue.add_argument(
        "--role",
        required=True,
        choices=[r.value for r in Role],
        help="what the client may do: read, write (and read) or admin (everything)",
    )
    issue.add_argument(
        "--prefix", default="", help="only keys starting with this (UTF-8; default: all keys)"
    )
    issue.add_argument(
        "--expires",
        type=duration_arg,
        default=CLIENT_LIFETIME,
        metavar="DURATION",
        help="lifetime, e.g. 30d, 12h (default 30d)",
    )
    issue.add_argument(
        "--out", required=True, type=Path, metavar="FILE", help="the credentials file to write"
    )
    issue.add_argument(
        "--bearer",
        action="store_true",
        help="write an HTTP bearer token (one line, mode 0600) instead of a credentials file: "
        "whoever holds it has its role, so keep it secret and short-lived",
    )
    issue.add_argument(
        "--key", type=Path, metavar="FILE", help="the client's key file (default: a new key)"
    )
    add_format_option(issue)
    issue.set_defaults(func=run_issue)


def _authority_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--authority", required=True, type=Path, metavar="DIR", help="the authority directory"
    )


# --- commands ----------------------------------------------------------------------------


def run_keygen(args: argparse.Namespace) -> int:
    key = generate()
    write_private_key(args.out, key, overwrite=args.force)
    public = bytes(key.verify_key)
    text = f"wrote {args.out}\npublic key: {public.hex()}\nnode id:    {node_id_of(public)}"
    emit(args, text, {"file": args.out, "public_key": public.hex(), "node_id": node_id_of(public)})
    return EXIT_OK


def run_init(args: argparse.Namespace) -> int:
    authority = Authority.init(args.dir)
    text = "\n".join(
        [
            f"created cluster {authority.trust.cluster} in {args.dir}",
            f"  authority key: {args.dir / 'authority.key'} (keep it secret and backed up)",
            f"  trust file:    {args.dir / 'cluster.trust'}",
            "next: for each node, run",
            f"  p2pindex cluster certify --authority {args.dir} --data-dir NODE_DATA_DIR",
            "and for each client",
            f"  p2pindex token issue --authority {args.dir} --role write --out client.cred",
        ]
    )
    document = {
        "cluster": authority.trust.cluster,
        "authority_key": args.dir / "authority.key",
        "trust_file": args.dir / "cluster.trust",
    }
    emit(args, text, document)
    return EXIT_OK


def run_certify(args: argparse.Namespace) -> int:
    authority = Authority.load(args.authority)
    if args.data_dir is not None:
        if args.out is not None:
            raise ConfigError("--out goes with --node-key or --public-key, not --data-dir")
        certificate = authority.provision(args.data_dir, args.expires)
        text = (
            f"certified node {certificate.node_id} in {args.data_dir}\n"
            f"  valid until {when(certificate.expires)}, serial {certificate.serial}\n"
            f"start it with: p2pindex serve --data-dir {args.data_dir} ..."
        )
        document = {
            "node_id": certificate.node_id,
            "data_dir": args.data_dir,
            "expires": when(certificate.expires),
            "serial": certificate.serial,
        }
        emit(args, text, document)
        return EXIT_OK
    if args.out is None:
        raise ConfigError("--out FILE is required with --node-key or --public-key")
    public = args.public_key or bytes(read_private_key(args.node_key).verify_key)
    args.out.write_bytes(authority.certify(public, args.expires))
    text = (
        f"certified node {node_id_of(public)}: wrote {args.out}\n"
        "copy it to the node's data directory as node.cert, with cluster.trust next to it"
    )
    emit(args, text, {"node_id": node_id_of(public), "file": args.out})
    return EXIT_OK


def run_revoke(args: argparse.Namespace) -> int:
    authority = Authority.load(args.authority)
    if not args.node_ids and not args.capability and authority.revocations() is None:
        raise ConfigError("name at least one NODE_ID or --capability SERIAL to revoke")
    document = authority.revoke(tuple(args.node_ids), tuple(args.capability))
    signed = f"signed a new revocation list ({args.authority / 'revocations.cbor'})"
    result: dict[str, object] = {
        "revocation_list": args.authority / "revocations.cbor",
        "node_ids": list(args.node_ids),
        "serials": list(args.capability),
    }
    if args.node is None:
        hint = "push it with --node HOST:PORT, or copy revocations.cbor into data directories"
        emit(args, f"{signed}\n{hint}", {**result, "pushed_to": None})
        return EXIT_OK
    detail = trio.run(_push, authority, args.node, document)
    emit(args, f"{signed}\n{args.node}: {detail}", {**result, "pushed_to": args.node})
    return EXIT_OK


async def _push(authority: Authority, address: Address, document: bytes) -> str:
    credentials = authority.credentials(Role.ADMIN, lifetime=PUSH_CAPABILITY_LIFETIME)
    stream = await SecureConnector(credentials).connect(address)
    async with trio.open_nursery() as nursery:
        channel = RpcChannel(stream, Limits(), name=str(address))
        await nursery.start(channel.run)
        with trio.fail_after(30):
            reply = await channel.request(RevocationPush(document))
        await channel.aclose()
    if isinstance(reply, ErrorReply):
        raise error_from_reply(reply)
    if not isinstance(reply, OkReply):
        raise ProtocolError(
            f"{address} answered the revocation list with message type {reply.TYPE}"
        )
    return reply.detail


def run_rotate(args: argparse.Namespace) -> int:
    old = Authority.load(args.authority)
    new = old.rotate()
    new_id, old_id = key_id(new.public_key).hex(), key_id(old.public_key).hex()
    text = (
        f"new authority key {new_id}; old key {old_id} stays trusted\n"
        "next: copy cluster.trust to every node's data directory, re-certify every node,\n"
        "re-issue client tokens, then run\n"
        f"  p2pindex cluster retire --authority {args.authority} --key {old_id}"
    )
    emit(args, text, {"new_key": new_id, "old_key": old_id})
    return EXIT_OK


def run_retire(args: argparse.Namespace) -> int:
    authority = Authority.load(args.authority).retire(args.key)
    trusted = sorted(key_id(k).hex() for k in authority.trust.authorities)
    text = (
        f"authority {args.key} retired; trusted now: {', '.join(trusted)}\n"
        "copy cluster.trust to every node's data directory (nodes reload it on their own)"
    )
    emit(args, text, {"retired": args.key, "trusted": trusted})
    return EXIT_OK


def run_issue(args: argparse.Namespace) -> int:
    authority = Authority.load(args.authority)
    if args.bearer:
        return _issue_bearer(args, authority)
    key = read_private_key(args.key) if args.key is not None else None
    prefix = args.prefix.encode()
    credentials = authority.credentials(Role(args.role), prefix, args.expires, key)
    if args.out.exists():
        raise ConfigError(f"{args.out} already exists; refusing to overwrite credentials")
    credentials.save(args.out)
    capability = credentials.check(time.time())
    scope = f"keys starting with {args.prefix!r}" if prefix else "every key"
    text = (
        f"wrote {args.out}: role {args.role} on {scope}, valid until {when(capability.expires)}\n"
        f"serial {capability.serial} (revoke with `p2pindex cluster revoke --capability "
        f"{capability.serial} ...`)\n"
        f"use it with: export {CREDENTIALS_ENV}={args.out}"
    )
    document = {
        "file": args.out,
        "role": args.role,
        "prefix": args.prefix,
        "expires": when(capability.expires),
        "serial": capability.serial,
    }
    emit(args, text, document)
    return EXIT_OK


def _issue_bearer(args: argparse.Namespace, authority: Authority) -> int:
    if args.key is not None:
        raise ConfigError("a bearer token has no client key; drop --key or --bearer")
    if args.out.exists():
        raise ConfigError(f"{args.out} already exists; refusing to overwrite a token")
    token = issue_bearer(authority, Role(args.role), args.prefix.encode(), args.expires)
    write_file_atomically(args.out, (token + "\n").encode(), 0o600)
    capability = BearerVerifier(TrustState(authority.trust)).verify(token, time.time())
    scope = f"keys starting with {args.prefix!r}" if args.prefix else "every key"
    text = (
        f"wrote {args.out}: bearer token, role {args.role} on {scope}, valid until "
        f"{when(capability.expires)}\n"
        f"serial {capability.serial} (revoke with `p2pindex cluster revoke --capability "
        f"{capability.serial} ...`)\n"
        f'use it with: curl -H "Authorization: Bearer $(cat {args.out})" URL'
    )
    document = {
        "file": args.out,
        "kind": "bearer",
        "role": args.role,
        "prefix": args.prefix,
        "expires": when(capability.expires),
        "serial": capability.serial,
    }
    emit(args, text, document)
    return EXIT_OK
