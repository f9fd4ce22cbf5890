"""The protocol fuzzer: hypothesis drives WebSocket frames and HTTP bodies at a real chatd.

A :class:`ProtocolFuzz` state machine opens, uses, closes and drops
WebSocket connections to one chatd (with its simulated LLM) and posts to
``/v1/chat``: valid chats, cancels and pings under random ids (valid,
empty, too long, not strings, unicode, duplicates of ids in flight),
malformed JSON, non-objects, wrong field types, unknown types, binary,
fragmented and oversized frames (around ``limits.max_frame_bytes``), bursts
of frames in one write, and connections that go mid-request or mid-frame.
Each frame's expected reply is worked out from protocol.md when it is made
(:func:`reply_to`), so a step never waits for a reply it does not need.

Checked as it runs (:class:`FuzzSocket` reads every connection all the
time): every event is well formed and none is ``internal``; per id, events
follow ``accepted`` … one terminal, nothing after it; every chat with a
readable id gets exactly one terminal event (its own, or the refusal of a
duplicate), every malformed frame exactly one ``error`` with the code and
id protocol.md gives; HTTP answers carry the right status and body. After
each example: the server still answers a chat on a new connection, a
bystander connection streaming answers all along got each one whole, and
no connection, request or LLM stream of the example is left. At the end:
chatd's request registry is empty, the simulator has no active stream, and
memory is back near where it was after the first 200 examples.

Where protocol.md is silent the model follows chatd, saying so: a ``ping``
whose id is not a valid id is answered ``pong`` without one; a chat
cancelled before it was accepted (its cancel right behind it) ends with
``done``/``cancelled`` and no ``accepted``; ``POST /v1/chat`` refuses a body
not declared ``application/json`` with 415 (a16dc8f). The fuzzer found that
chatd counted a frame's characters against ``limits.max_frame_bytes``;
``test_frame_limit_counts_bytes`` keeps it fixed.

Hypothesis runs in a worker thread and each step crosses into the trio loop
(``trio.from_thread.run``): one server for every example, where a
``trio.run`` per example would spend the time limit starting servers.
Seeded: ``CHATD_FUZZ_SEED=N`` runs another seed, ``CHATD_FUZZ_EXAMPLES=N``
another count; the seed is printed and named in every failure.
benchmarks/fuzz.py runs the same fuzzer for long (it imports it through
tests/e2e/test_fuzz.py, which runs it in CI).

The package, by responsibility (each module imports only those above it):

- :mod:`.replies`: the chatd under fuzz (:func:`~.replies.fuzz_settings`)
  and what each frame and ``POST /v1/chat`` body must get back;
- :mod:`.strategies`: hypothesis strategies for frames, bursts and bodies;
- :mod:`.ledger`: what a connection is owed and what it got, event by event;
- :mod:`.client`: :class:`~.client.FuzzSocket`, a raw WebSocket that sends
  any frame and checks every event it reads;
- :mod:`.harness`: one chatd, a bystander, and the steps' way into trio;
- :mod:`.machine`: the :class:`~.machine.ProtocolFuzz` state machine and
  one hypothesis run of it;
- :mod:`.run`: :func:`~.run.fuzz`, a whole run in chunks, and its result.
"""
