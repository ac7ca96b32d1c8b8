"""Standard 5-field cron in config becomes KFP's 6-field cron; bad or ambiguous ones are refused."""

from __future__ import annotations

import pytest

from pipelines.config.cron import recurring_cron, to_kfp_cron
from pipelines.config.schema import ScheduleConfig
from pipelines.errors import ConfigError


@pytest.mark.parametrize(
    ("standard", "kfp"),
    [
        ("0 2 * * *", "0 0 2 * * *"),  # given as-is, KFP would run it hourly at minute 2
        ("*/15 * * * *", "0 */15 * * * *"),
        ("30 6 * * 1-5", "0 30 6 * * 1-5"),
        ("0 0 1 * *", "0 0 0 1 * *"),
        ("0 9 * * MON-FRI", "0 0 9 * * MON-FRI"),
        ("0 12 * jan,Jul *", "0 0 12 * jan,Jul *"),
        ("5 4 * * sun", "0 5 4 * * sun"),
        ("0 0 * * 7", "0 0 0 * * 0"),  # Sunday as 7: robfig takes 0-6 only
        ("0 0 * * 5-7", "0 0 0 * * 0,5,6"),
        ("0 0 29 2 *", "0 0 0 29 2 *"),  # leap years only, but it does run
        ("0 22-23,0-2 * * *", "0 0 22-23,0-2 * * *"),
        ("0-59/10 * * * *", "0 0-59/10 * * * *"),
        ("0 0/6 * * *", "0 0 0/6 * * *"),  # a/n: a to the maximum, as robfig reads it
        ("0 0 1,15 */3 *", "0 0 0 1,15 */3 *"),
        ("  0   2 * *\t* ", "0 0 2 * * *"),
        ("00 02 * * *", "0 00 02 * * *"),
    ],
)
def test_standard_cron_gets_a_leading_seconds_field(standard: str, kfp: str) -> None:
    assert to_kfp_cron(standard) == kfp


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        # Field counts: a 6-field expression already has seconds and would be shifted.
        ("0 0 2 * * *", "found 6: kfbatch adds KFP's leading seconds field itself"),
        ("0 0 2 * * * 2030", "found 7"),
        ("0 2 * *", "5 fields (minute hour day-of-month month day-of-week), found 4"),
        ("", "a 5-field cron expression"),
        ("   ", "a 5-field cron expression"),
        # Descriptors.
        ("@daily", "instead of @daily (write '0 0 * * *')"),
        ("@hourly", "instead of @hourly (write '0 * * * *')"),
        ("@weekly", "(write '0 0 * * 0')"),
        ("@every 1h", "instead of @every (KFP counts @every intervals from when"),
        ("@reboot", "@reboot is not supported"),
        ("CRON_TZ=Europe/Berlin 0 2 * *", "without a time-zone prefix"),
        # Ranges of values.
        ("60 * * * *", "minute values in 0-59 (field 1 is '60')"),
        ("-1 * * * *", "minute values as numbers 0-59"),
        ("0 24 * * *", "hour values in 0-23 (field 2 is '24')"),
        ("0 0 0 * *", "day-of-month values in 1-31"),
        ("0 0 32 * *", "day-of-month values in 1-31"),
        ("0 0 * 0 *", "month values in 1-12"),
        ("0 0 * 13 *", "month values in 1-12"),
        ("0 0 * * 8", "day-of-week values in 0-7"),
        # Steps and ranges.
        ("*/0 * * * *", "minute steps from 1 to 59 (field 1 is '*/0')"),
        ("*/60 * * * *", "minute steps from 1 to 59"),
        ("0 */x * * *", "hour steps from 1 to 23"),
        ("0 0 * * */7", "day-of-week steps from 1 to 6"),
        ("0 5-2 * * *", "hour ranges that go upwards"),
        ("0 0 * * FRI-MON", "day-of-week ranges that go upwards"),
        ("0 0 * * MON-", "day-of-week values as numbers 0-7 or names SUN/MON"),
        ("1,,2 * * * *", "minute lists without empty items"),
        ("0 0 1-2-3 * *", "day-of-month values as numbers 1-31"),
        # Names in the wrong place, or names robfig does not know.
        ("0 jan * * *", "hour values as numbers 0-23 (field 2 is 'jan')"),
        ("0 0 * * monday", "names SUN/MON/TUE/WED/THU/FRI/SAT"),
        ("0 0 * January *", "names JAN/FEB/MAR"),
        # Non-standard syntax (Quartz / robfig extensions).
        ("0 0 ? * *", "day-of-month values as numbers 1-31"),
        ("0 0 L * *", "day-of-month values as numbers 1-31"),
        ("0 0 15W * *", "day-of-month values as numbers 1-31"),
        ("0 0 * * 5#3", "day-of-week values as numbers 0-7"),
        # Day-of-month and day-of-week both restricted: cron ORs them.
        ("0 0 13 * 5", "restricted, not both: cron runs when EITHER matches"),
        ("0 0 */2 * 1", "set one of them to '*'"),
        ("0 0 1-7 * MON", "not both"),
        # Never fires.
        ("0 0 31 2 *", "a day of month that the selected months have (day 31 of month 2)"),
        ("0 0 30,31 2 *", "a day of month that the selected months have"),
        ("0 0 31 4,6,9,11 *", "a day of month that the selected months have"),
    ],
)
def test_invalid_or_ambiguous_cron_is_refused_with_one_line(expr: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        to_kfp_cron(expr)
    text = str(caught.value)
    assert text.startswith("schedule.cron: expected ")
    assert message in text
    assert text.endswith(f"got {expr!r}")
    assert "\n" not in text


def test_errors_name_the_given_key() -> None:
    with pytest.raises(ConfigError, match=r"^cron: expected hour values"):
        to_kfp_cron("0 99 * * *", key="cron")


def test_recurring_cron_converts_the_configured_schedule() -> None:
    assert recurring_cron(ScheduleConfig(cron="0 2 * * *", timezone="UTC")) == "0 0 2 * * *"
    assert recurring_cron(ScheduleConfig(cron="0 2 * * *", timezone="Etc/UTC")) == "0 0 2 * * *"


def test_recurring_cron_needs_a_cron() -> None:
    with pytest.raises(ConfigError, match=r"^schedule.cron: expected a 5-field cron .* got None$"):
        recurring_cron(ScheduleConfig(cron=None))


def test_recurring_cron_refuses_a_time_zone_kfp_cannot_honour() -> None:
    with pytest.raises(ConfigError) as caught:
        recurring_cron(ScheduleConfig(cron="0 2 * * *", timezone="Europe/Berlin"))
    assert str(caught.value).startswith("schedule.timezone: expected UTC for a KFP recurring run")
    assert "CRON_SCHEDULE_TIMEZONE" in str(caught.value)
    assert str(caught.value).endswith("got 'Europe/Berlin'")
