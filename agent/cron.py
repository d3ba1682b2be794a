"""Crontab lines as APScheduler triggers, with crontab's weekday numbering (a leaf: settings validates with it)."""

from __future__ import annotations

from typing import Any

from apscheduler.triggers.cron import CronTrigger

_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def crontab_trigger(expr: str, timezone: Any = None) -> CronTrigger:
    """A trigger for a standard crontab line (``minute hour day month weekday``).

    APScheduler 3's own ``CronTrigger.from_crontab`` numbers weekdays from Monday = 0 (its documented historical
    mistake, fixed only in 4.x); crontab numbers them from Sunday = 0 (and 7). Numeric weekdays are translated
    here into names, so ``0 6 * * 1`` fires on Mondays as it does in cron.

    Raises:
        ValueError: not five fields, or a field APScheduler cannot read.
    """
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"Wrong number of fields; got {len(fields)}, expected 5")
    minute, hour, day, month, weekday = fields
    return CronTrigger(
        minute=minute, hour=hour, day=day, month=month, day_of_week=_weekdays(weekday), timezone=timezone
    )


def _weekdays(field: str) -> str:
    """A crontab weekday field with every number (Sunday = 0 or 7) written as a day name."""
    out: list[str] = []
    for part in field.split(","):
        body, slash, step_text = part.partition("/")
        step = int(step_text) if slash and step_text.isdigit() else None
        if slash and step is None:
            raise ValueError(f"weekday step {part!r} is not a number")
        lo_text, dash, hi_text = body.partition("-")
        numeric = (body == "*" and step is not None) or (
            lo_text.isdigit() and (not dash or hi_text.isdigit())
        )
        if not numeric:
            out.append(
                part
            )  # names (mon-fri), '*', or something APScheduler will reject with its own message
            continue
        lo, hi = (0, 6) if body == "*" else (int(lo_text), int(hi_text) if dash else int(lo_text))
        if not (0 <= lo <= 7 and 0 <= hi <= 7) or hi < lo:
            raise ValueError(f"weekday {part!r} is out of range (0-7, Sunday is 0 or 7)")
        if not dash and body != "*" and step is not None:
            hi = 6  # crontab: '1/2' means from Monday, every second day
        days = range(lo, hi + 1, step or 1)
        out.extend(_WEEKDAYS[d % 7] for d in days)
    return ",".join(dict.fromkeys(out))
