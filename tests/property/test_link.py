"""Hypothesis: the link protocol delivers every sequenced item exactly once, in order, over a
lane that drops, duplicates and (across retransmissions) reorders, with receiver restarts."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from actr_trio._link import ReceiveLink, SendLink

# A step of the network: deliver the head of the wire, drop it, duplicate it, time out
# (retransmit all unacked), restart the receiver (it forgets its link state), or send a new item.
STEPS = st.lists(
    st.sampled_from(["deliver", "deliver", "deliver", "drop", "dup", "timeout", "restart", "send"]),
    min_size=1,
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(STEPS)
def test_every_acked_item_delivered_once_in_order(steps: list[str]) -> None:
    sender: SendLink[int] = SendLink()
    receiver = ReceiveLink()
    wire: list[tuple[int, int, int]] = []  # (epoch, seq, item)
    delivered: list[int] = []
    committed: set[int] = set()  # the mailbox dedupe table survives restarts
    acked: set[int] = set()
    next_item = 0

    def transmit(items: list[tuple[int, int]]) -> None:
        wire.extend((sender.epoch, seq, item) for seq, item in items)

    def deliver_one() -> None:
        epoch, seq, item = wire.pop(0)
        verdict = receiver.classify(epoch, seq)
        if verdict == "reset":
            if epoch == sender.epoch:
                transmit(sender.restart())
            return
        if verdict == "accept" and item not in committed:
            committed.add(item)
            delivered.append(item)
        if receiver.epoch is not None:
            acked.update(i for _, i in sender.on_ack(receiver.epoch, receiver.cumulative))

    for step in [*steps, "timeout"]:
        if step == "send":
            seq = sender.stamp(next_item)
            wire.append((sender.epoch, seq, next_item))
            next_item += 1
        elif step == "deliver" and wire:
            deliver_one()
        elif step == "drop" and wire:
            wire.pop(0)
        elif step == "dup" and wire:
            wire.insert(0, wire[0])
        elif step == "timeout":
            transmit(sender.unacked())
        elif step == "restart":
            receiver = ReceiveLink()
    # Let the network settle: deliver everything, retransmitting until all is acked.
    for _ in range(10_000):
        if not sender.unacked() and not wire:
            break
        if not wire:
            transmit(sender.unacked())
        deliver_one()
    assert not sender.unacked()
    assert acked == set(range(next_item))
    # FIFO: the first delivery of each item happens in send order.
    assert delivered == sorted(delivered)
    assert delivered == list(range(next_item))


def test_new_epoch_only_at_seq_one() -> None:
    receiver = ReceiveLink()
    assert receiver.classify(7, 3) == "reset"
    assert receiver.classify(7, 1) == "accept"
    assert receiver.classify(7, 3) == "gap"
    assert receiver.classify(7, 2) == "accept"
    assert receiver.classify(7, 2) == "duplicate"
    assert receiver.cumulative == 2


def test_ack_of_another_epoch_is_stale() -> None:
    sender: SendLink[str] = SendLink(epoch=5)
    sender.stamp("a")
    assert sender.on_ack(4, 10) == []
    assert sender.on_ack(5, 1) == [(1, "a")]
