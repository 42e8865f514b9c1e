import pytest

from components.core.units import format_mem, format_time, parse_mem_mb, parse_time_s


@pytest.mark.parametrize(
    ("text", "mb"),
    [("4G", 4096), ("4g", 4096), ("500M", 500), ("1.5G", 1536), ("1T", 1048576), (2048, 2048), ("2048", 2048), ("8GB", 8192), ("8GiB", 8192), ("1536K", 2)],
)
def test_parse_mem(text, mb):
    assert parse_mem_mb(text) == mb


@pytest.mark.parametrize("text", ["10XB", "", "G", "-1G", "0", "4 G B", True])
def test_parse_mem_rejects(text):
    with pytest.raises(ValueError, match="memory"):
        parse_mem_mb(text)


@pytest.mark.parametrize(("mb", "text"), [(4096, "4G"), (1536, "1536M"), (1048576, "1T"), (494000, "494000M")])
def test_format_mem(mb, text):
    assert format_mem(mb) == text


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 1800), ("10:30", 630), ("01:00:00", 3600), ("1-00", 86400), ("1-02:30", 95400), ("2-00:00:01", 172801)],
)
def test_parse_time(text, seconds):
    assert parse_time_s(text) == seconds


@pytest.mark.parametrize(
    ("text", "why"),
    [("99:99", "seconds"), ("01:75:00", "minutes"), ("1-25:00:00", "hours"), ("soon", "not a Slurm duration"), ("0", "greater than zero")],
)
def test_parse_time_rejects(text, why):
    with pytest.raises(ValueError, match=why):
        parse_time_s(text)


@pytest.mark.parametrize(("seconds", "text"), [(3600, "01:00:00"), (93600, "1-02:00:00"), (59, "00:00:59")])
def test_format_time_round_trips(seconds, text):
    assert format_time(seconds) == text
    assert parse_time_s(text) == seconds
