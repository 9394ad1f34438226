"""The dead-letter queue as an operator sees it: list with filters, fetch one, re-publish after a fix."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from services.ingest.dlq import DeadLetter
from services.ingest.streams import read_stream
from shared.subjects import Names


async def list_letters(
    js: JetStreamContext,
    names: Names,
    *,
    event_type: str | None = None,
    reason: str | None = None,
    start_seq: int = 1,
    limit: int | None = None,
) -> list[DeadLetter]:
    """Dead letters in sequence order, of one type and/or reason if given, at most ``limit`` of them."""
    subject = names.dlq(event_type) if event_type else None
    letters = []
    for stored in await read_stream(js, names.stream("dlq"), subject=subject, start_seq=start_seq):
        letter = DeadLetter(stored.seq, stored.subject, stored.data, stored.headers, stored.time_ms)
        if reason is not None and letter.reason != reason:
            continue
        letters.append(letter)
        if limit is not None and len(letters) >= limit:
            break
    return letters


async def get_letter(js: JetStreamContext, names: Names, seq: int) -> DeadLetter | None:
    try:
        raw = await js.get_msg(names.stream("dlq"), seq)
    except NotFoundError:
        return None
    time_ms = int(raw.time.timestamp() * 1000) if raw.time is not None else None
    return DeadLetter(raw.seq or seq, raw.subject or "", raw.data or b"", dict(raw.headers or {}), time_ms)


async def replay(
    js: JetStreamContext, names: Names, letters: Sequence[DeadLetter], *, delete: bool = False
) -> list[tuple[DeadLetter, str]]:
    """Re-publish each letter's original bytes to the subject it came in on; delete it once stored, if asked.

    Returns ``(letter, error)`` for each one that could not be replayed.
    """
    failures: list[tuple[DeadLetter, str]] = []

    async def one(letter: DeadLetter) -> None:
        subject = letter.replay_subject()
        if not subject.startswith(names.events("")):
            failures.append((letter, f"no events subject recorded (Rtml-Subject={subject!r})"))
            return
        try:
            await js.publish(subject, letter.data, headers=letter.replay_headers())
            if delete:
                await js.delete_msg(names.stream("dlq"), letter.seq)
        except Exception as error:
            failures.append((letter, f"{type(error).__name__}: {error}"))

    for start in range(0, len(letters), 256):
        await asyncio.gather(*(one(letter) for letter in letters[start : start + 256]))
    return failures
