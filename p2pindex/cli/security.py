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

from p2pindex.cli.common import EXIT_OK, address_arg
from p2pindex.config import Limits
from p2pindex.errors import ConfigError, ProtocolError
from p2pindex.net.channel import RpcChannel
from p2pindex.security.authority import CLIENT_LIFETIME, NODE_LIFETIME, Authority
from p2pindex.security.bearer import BearerVerifier, issue_bearer
from p2pindex.security.certs import Role, node_id_of, when
from p2pindex.security.credentials import CREDENTIALS_ENV, SecureConnector
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
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or int(match.group(1)) == 0:
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
    keygen.add_argument("--out", required=True, type=Path, metavar="FILE")
    keygen.add_argument("--force", action="store_true", help="replace an existing key file")
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
    init.add_argument("--dir", required=True, type=Path, metavar="DIR")
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
    revoke.add_argument("node_ids", nargs="*", type=node_id_arg, metavar="NODE_ID")
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
    rotate.set_defaults(func=run_rotate)

    retire = actions.add_parser(
        "retire",
        help="stop trusting an old authority key",
        description="Remove an authority key from the trust file after a rotation.",
    )
    _authority_option(retire)
    retire.add_argument("--key", required=True, metavar="KEY_ID", help="authority key id (hex)")
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
    issue.add_argument("--role", required=True, choices=[r.value for r in Role])
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
    issue.add_argument("--out", required=True, type=Path, metavar="FILE")
    issue.add_argument(
        "--bearer",
        action="store_true",
        help="write an HTTP bearer token (one line, mode 0600) instead of a credentials file: "
        "whoever holds it has its role, so keep it secret and short-lived",
    )
    issue.add_argument(
        "--key", type=Path, metavar="FILE", help="the client's key file (default: a new key)"
    )
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
    print(f"wrote {args.out}")
    print(f"public key: {public.hex()}")
    print(f"node id:    {node_id_of(public)}")
    return EXIT_OK


def run_init(args: argparse.Namespace) -> int:
    authority = Authority.init(args.dir)
    print(f"created cluster {authority.trust.cluster} in {args.dir}")
    print(f"  authority key: {args.dir / 'authority.key'} (keep it secret and backed up)")
    print(f"  trust file:    {args.dir / 'cluster.trust'}")
    print("next: for each node, run")
    print(f"  p2pindex cluster certify --authority {args.dir} --data-dir NODE_DATA_DIR")
    print("and for each client")
    print(f"  p2pindex token issue --authority {args.dir} --role write --out client.cred")
    return EXIT_OK


def run_certify(args: argparse.Namespace) -> int:
    authority = Authority.load(args.authority)
    if args.data_dir is not None:
        if args.out is not None:
            raise ConfigError("--out goes with --node-key or --public-key, not --data-dir")
        certificate = authority.provision(args.data_dir, args.expires)
        print(f"certified node {certificate.node_id} in {args.data_dir}")
        print(f"  valid until {when(certificate.expires)}, serial {certificate.serial}")
        print(f"start it with: p2pindex serve --data-dir {args.data_dir} ...")
        return EXIT_OK
    if args.out is None:
        raise ConfigError("--out FILE is required with --node-key or --public-key")
    public = args.public_key or bytes(read_private_key(args.node_key).verify_key)
    args.out.write_bytes(authority.certify(public, args.expires))
    print(f"certified node {node_id_of(public)}: wrote {args.out}")
    print("copy it to the node's data directory as node.cert, with cluster.trust next to it")
    return EXIT_OK


def run_revoke(args: argparse.Namespace) -> int:
    authority = Authority.load(args.authority)
    if not args.node_ids and not args.capability and authority.revocations() is None:
        raise ConfigError("name at least one NODE_ID or --capability SERIAL to revoke")
    document = authority.revoke(tuple(args.node_ids), tuple(args.capability))
    print(f"signed a new revocation list ({args.authority / 'revocations.cbor'})")
    if args.node is None:
        print("push it with --node HOST:PORT, or copy revocations.cbor into data directories")
        return EXIT_OK
    detail = trio.run(_push, authority, args.node, document)
    print(f"{args.node}: {detail}")
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
        raise ProtocolError(f"unexpected reply {type(reply).__name__}")
    return reply.detail


def run_rotate(args: argparse.Namespace) -> int:
    old = Authority.load(args.authority)
    new = old.rotate()
    print(
        f"new authority key {key_id(new.public_key).hex()}; "
        f"old key {key_id(old.public_key).hex()} stays trusted"
    )
    print("next: copy cluster.trust to every node's data directory, re-certify every node,")
    print("re-issue client tokens, then run")
    print(
        f"  p2pindex cluster retire --authority {args.authority} "
        f"--key {key_id(old.public_key).hex()}"
    )
    return EXIT_OK


def run_retire(args: argparse.Namespace) -> int:
    authority = Authority.load(args.authority).retire(args.key)
    remaining = ", ".join(sorted(key_id(k).hex() for k in authority.trust.authorities))
    print(f"authority {args.key} retired; trusted now: {remaining}")
    print("copy cluster.trust to every node's data directory (nodes reload it on their own)")
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
    print(f"wrote {args.out}: role {args.role} on {scope}, valid until {when(capability.expires)}")
    print(
        f"serial {capability.serial} (revoke with `p2pindex cluster revoke --capability "
        f"{capability.serial} ...`)"
    )
    print(f"use it with: export {CREDENTIALS_ENV}={args.out}")
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
    print(
        f"wrote {args.out}: bearer token, role {args.role} on {scope}, valid until "
        f"{when(capability.expires)}"
    )
    print(
        f"serial {capability.serial} (revoke with `p2pindex cluster revoke --capability "
        f"{capability.serial} ...`)"
    )
    print(f'use it with: curl -H "Authorization: Bearer $(cat {args.out})" URL')
    return EXIT_OK
