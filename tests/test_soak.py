"""The soak, in its two-minute CI size: no growth of memory, threads or file descriptors, and
/metrics answers throughout. The one-hour result is in docs/reliability.md."""

from tests import soak


def test_two_minute_soak_shows_no_growth():
    result = soak.soak(minutes=2)
    assert result["scrapes"] > 50 and result["stops"] > 0
    assert result["verdict"]["ok"], soak.report(result)
