"""The secure transport: the handshake and session that wrap a Transport's streams, the
connector a client uses and the SecurityManager a node plugs in. It sits above
``p2pindex.security`` (identities, certificates, capabilities, trust), which never imports it.
"""
