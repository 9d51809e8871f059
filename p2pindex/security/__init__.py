"""Identities, certificates, sessions and access control (see docs/security.md).

Modules, bottom up: ``keys`` (key files), ``certs`` (signed documents, trust sets),
``trust`` (trust and revocation state), ``directory`` (verified node certificates),
``access`` (peers and the authorization table), ``handshake`` and ``session`` (the
authenticated, encrypted TCP layer), ``datagrams`` (signed SWIM datagrams), ``claims``
(signed membership records), ``audit``, ``manager`` (what a node plugs in),
``credentials`` (what a client uses) and ``authority`` (what `p2pindex cluster` runs).
"""
