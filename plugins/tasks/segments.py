"""Streams of segments redrawn together: the chunks of `anbn` and `distant-brackets`.

Both tasks give each of their B streams an endless sequence of independent segments (`anbn`:
blocks a^n b^n; `distant-brackets`: lines ( u ) v ( u ) ⏎), defined one step at a time: at a step
where the segment of at least one stream ends, the generator makes the draws of a new segment for
every stream (all streams draw, so the generator advances the same way whichever streams need a
segment) and the streams whose segment ended start the one drawn for them at the next step; the
others' are dropped. Counting from a chunk's first step, the k-th step where some segment ends
is *event* k; it takes the draws at counters c + k·d (c the counter at the chunk's start, d the
draws per event).

:class:`Segments` reproduces this for a chunk of T steps at once. It takes each stream's position in
its current segment, that segment's length, and the length of the segment that each stream would
draw at each event k (the task computes every candidate from :meth:`gradflow.CounterRNG.bits_at`:
K ≤ :meth:`Segments.max_events` of them). It finds the events a window of steps at a time: no
segment is shorter than ``shortest`` steps, so every segment that ends within ``shortest`` steps of
the next event has already started, and the events of that window are the distinct steps where those
segments end, numbered in order; the streams take the candidates of those events (with one stream,
its ends are the events: a cumulative sum). Then it lays each stream's segments (its current one,
then those it took, in order) end to end: :meth:`Segments.locate` gives, for step k of the chunk,
the segment and the position in it of each stream's character, and :meth:`Segments.pick` each
segment's parameters (its block size n, its symbols), from which the task writes the characters. The
target of a step is the next character of the stream (after a segment ends, the first of the next
one), so T + 1 characters give a chunk's inputs and targets.
"""

from __future__ import annotations

import numpy as np


class Segments:
    """Where the segments of B streams lie over a chunk of ``steps`` steps.

    ``pos`` (B,): the position of each stream's next character in its current segment;
    ``length`` (B,): the length of that segment; ``lengths`` (K, B): the length of the segment
    that stream b would start at event k (K at least :meth:`max_events`); ``shortest``: no
    segment is shorter.
    """

    def __init__(self, pos: np.ndarray, length: np.ndarray, lengths: np.ndarray, steps: int,
                 shortest: int) -> None:
        batch = pos.shape[0]
        ends = length - pos - 1  # the chunk's step at which each stream's segment ends
        event_steps = [np.zeros(0, dtype=np.int64)]
        streams, events = [np.arange(batch)], [np.full(batch, -1)]  # -1: the current segment
        if batch == 1:  # each end of the one stream is the next event: no window to find
            chain = ends[0] + np.concatenate([[0], np.cumsum(lengths[:-1, 0])])
            event_steps.append(chain[chain < steps])
            events.append(np.arange(event_steps[-1].shape[0]))
            streams.append(np.zeros_like(events[-1]))
            ends[:] = steps
        taken = 0  # events so far
        while (first := int(ends.min())) < steps:
            # the segments that end before the window's horizon have all started
            ending = np.flatnonzero(ends < min(first + shortest, steps))
            at = ends[ending]
            window = np.unique(at)  # the steps of this window's events, in order
            event = taken + np.searchsorted(window, at)
            ends[ending] = at + lengths[event, ending]
            streams.append(ending)
            events.append(event)
            event_steps.append(window)
            taken += window.shape[0]
        stream, event = np.concatenate(streams), np.concatenate(events)
        order = np.lexsort((event, stream))  # each stream's segments, in order
        #: stream and event (−1: the current segment) of each segment, in layout order
        self.stream, self.event = stream[order], event[order]
        sizes = self.pick(length, lengths)
        start = np.cumsum(sizes) - sizes  # where each segment starts in the layout
        #: the segment of each character of the layout, and the character's position in it
        self.segment = np.repeat(np.arange(sizes.shape[0]), sizes)
        self.offset = np.arange(self.segment.shape[0]) - start[self.segment]
        #: where each stream's next character lies in the layout
        self.origin = start[np.searchsorted(self.stream, np.arange(batch))] + pos
        #: the chunk's step of each event
        self.event_steps = np.concatenate(event_steps)

    @staticmethod
    def max_events(batch: int, steps: int, shortest: int) -> int:
        """At most this many events in ``steps`` steps of B streams whose segments have at
        least ``shortest`` characters: one per step, and ⌊steps / shortest⌋ + 1 per stream."""
        return min(steps, batch * (steps // shortest + 1))

    def pick(self, now: np.ndarray, drawn: np.ndarray) -> np.ndarray:
        """A parameter of each segment, in layout order: ``now[b]`` (B, ...) for stream b's
        current segment, ``drawn[k, b]`` (K, B, ...) for the one it took at event k."""
        out = drawn[np.maximum(self.event, 0), self.stream]
        current = self.event < 0
        out[current] = now[self.stream[current]]
        return out

    def locate(self, k: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The segment (index in layout order) and the position in it of each stream's
        character at step k of the chunk (its input; k = T: the target of the last step); an
        array of shape (..., 1) of steps gives arrays of shape (..., B)."""
        at = self.origin + k
        return self.segment[at], self.offset[at]

    def events_before(self, k: int) -> int:
        """The number of events at the chunk's first k steps."""
        return int(np.searchsorted(self.event_steps, k))
