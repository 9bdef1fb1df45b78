"""maintenance-window: a pre-reset listener, in Python, that vetoes resets outside the
maintenance windows given as its parameters ("HH:MM-HH:MM" in UTC, one per parameter; a
window may wrap midnight, e.g. "22:00-02:00"). Built with componentize-py against the narrow
world in wit/world.wit, so it imports only `log` (plus WASI clocks for the time)."""

import time

import wit_world
from wit_world.imports import log, types


def parse_window(text):
    """Minutes since midnight (start, end) of a "HH:MM-HH:MM" window; None if malformed."""
    try:
        start, end = text.split("-")
        def minutes(hhmm):
            h, m = hhmm.split(":")
            h, m = int(h), int(m)
            if not (0 <= h <= 24 and 0 <= m < 60 and h * 60 + m <= 24 * 60):
                raise ValueError(hhmm)
            return h * 60 + m
        return minutes(start), minutes(end)
    except ValueError:
        return None


def inside(now, window):
    start, end = window
    if start <= end:
        return start <= now < end
    return now >= start or now < end


class WitWorld(wit_world.WitWorld):
    def pre_reset(self, event: types.Event) -> types.PreOutcome:
        if not event.parameters:
            return types.PreOutcome_Veto("no maintenance window given; add parameters like 22:00-02:00")
        t = time.gmtime()
        now = t.tm_hour * 60 + t.tm_min
        for text in event.parameters:
            window = parse_window(text)
            if window is None:
                return types.PreOutcome_Veto(f"'{text}' is not a window; write HH:MM-HH:MM in UTC")
            if inside(now, window):
                log.write(log.Level.INFO, f"inside maintenance window {text}")
                return types.PreOutcome_Proceed()
        return types.PreOutcome_Veto(
            f"outside the maintenance windows ({', '.join(event.parameters)} UTC); it is {t.tm_hour:02}:{t.tm_min:02} UTC"
        )

    def post_reset(self, event: types.Event) -> types.PostOutcome:
        return types.PostOutcome_Success("")
