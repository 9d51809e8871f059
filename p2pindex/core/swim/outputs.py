"""The one way a driver drains the engine's outputs, in the one order every driver uses.

The trio driver (``p2pindex.node.membership``) and the virtual-time simulator
(``p2pindex.sim.swim_sim``) both hand the engine's pending outputs to an ``Outputs`` through
:func:`drain`: datagrams to send, then push-pull exchanges to start, then membership
events. A driver whose sends are asynchronous collects the datagrams and sends them after
``drain`` returns; what it does with the rest happens in the same order in both.
"""

from __future__ import annotations

from typing import Protocol

from p2pindex.types import Address

from .state import MemberChanged
from .swim import Swim


class Outputs(Protocol):
    def send_datagram(self, address: Address, data: bytes) -> None: ...

    def start_push_pull(self, address: Address, join: bool) -> None: ...

    def member_changed(self, event: MemberChanged) -> None: ...


def drain(swim: Swim, outputs: Outputs) -> None:
    """Hand everything ``swim`` has pending to ``outputs``: datagrams, push-pulls, events."""
    send = outputs.send_datagram
    for address, data in swim.datagrams_to_send():
        send(address, data)
    for address, join in swim.push_pulls_to_start():
        outputs.start_push_pull(address, join)
    event = swim.next_event()
    while event is not None:
        outputs.member_changed(event)
        event = swim.next_event()
