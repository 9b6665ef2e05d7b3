import pytest
from hypothesis import given
from hypothesis import strategies as st

from casstore.errors import InvalidInput
from casstore.model.sizes import format_size, parse_size


@pytest.mark.parametrize(
    "text,n",
    [("0", 0), ("500M", 500 << 20), ("20G", 20 << 30), ("1.5T", 3 << 39), ("50m", 50 << 20), ("1KiB", 1024), ("7 GB", 7 << 30)],
)
def test_parse(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("bad", ["", "M", "-1G", "1.2.3G", "5X", "1e9", "ten"])
def test_parse_rejects(bad):
    with pytest.raises(InvalidInput) as e:
        parse_size(bad)
    assert repr(bad) in str(e.value)


@given(st.integers(0, 1 << 50))
def test_format_is_close_to_the_number(n):
    text = format_size(n)
    back = parse_size(text.replace(" ", "").replace("i", ""))
    assert abs(back - n) <= max(n * 0.05, 1)
