"""Identities, certificates, capabilities and access control (see docs/security.md).

Modules, bottom up: ``keys`` (key files), ``certs`` (signed documents, trust sets),
``trust`` (trust and revocation state), ``directory`` (verified node certificates),
``access`` (peers and the authorization table), ``datagrams`` (signed SWIM datagrams),
``claims`` (signed membership records), ``audit``, ``files`` (where a node's material
lives), ``credentials`` (what a client holds) and ``authority`` (what `p2pindex cluster`
runs). The handshake, the session and the SecurityManager that wrap a Transport live with
the transport, in ``p2pindex.net.secure``, one layer up: this package never imports net.
"""
