"""Business hours: the "48 h ouvrées" rule (Monday to Friday, French public holidays excluded, Paris time).

Pure functions of the times they are given.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from banclfp.recording.record import LOCAL_TZ, as_local

BUSINESS_HOURS_BEFORE_RETEST = 48.0


@lru_cache(maxsize=64)
def _french_holidays(year: int) -> frozenset[date]:
    import holidays  # local import: only needed for business-hour rules

    return frozenset(holidays.France(years=year).keys())


def is_business_day(day: date) -> bool:
    """Monday to Friday and not a French public holiday."""
    return day.weekday() < 5 and day not in _french_holidays(day.year)


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=LOCAL_TZ)


def business_hours_between(start: datetime, end: datetime) -> float:
    """Business hours elapsed from `start` to `end` (real elapsed time inside business days, Paris time)."""
    start, end = as_local(start), as_local(end)
    if end <= start:
        return 0.0
    total_s = 0.0
    day = start.astimezone(LOCAL_TZ).date()
    last = end.astimezone(LOCAL_TZ).date()
    while day <= last:
        if is_business_day(day):
            lo = max(start, _day_start(day))
            hi = min(end, _day_start(day + timedelta(days=1)))
            if hi > lo:
                total_s += (hi - lo).total_seconds()
        day += timedelta(days=1)
    return total_s / 3600.0


def add_business_hours(start: datetime, hours: float) -> datetime:
    """The moment `hours` business hours after `start` (skipping weekends and French holidays)."""
    if hours < 0:
        raise ValueError("hours must be >= 0")
    moment = as_local(start).astimezone(LOCAL_TZ)
    remaining_s = hours * 3600.0
    day = moment.date()
    while True:
        day_end = _day_start(day + timedelta(days=1))
        if is_business_day(day):
            lo = max(moment, _day_start(day))
            available_s = (day_end - lo).total_seconds()
            if remaining_s <= available_s:
                return (lo.astimezone(ZoneInfo("UTC")) + timedelta(seconds=remaining_s)).astimezone(LOCAL_TZ)
            remaining_s -= available_s
        day += timedelta(days=1)


def is_past_business_hours(since: datetime, now: datetime, hours: float = BUSINESS_HOURS_BEFORE_RETEST) -> bool:
    """True when at least `hours` business hours have passed from `since` to `now`."""
    return business_hours_between(since, now) >= hours - 1e-9
