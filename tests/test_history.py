import pytest

from casstore.errors import NotFound
from casstore.model.digest import Digest
from casstore.model.history import Switch, rollback_target, undo_stack


def sw(seq, version, action="use", previous=None):
    return Switch(seq, version, Digest(f"{seq:064x}"), previous, action, 0.0, "h", 1, "u")


def versions(stack):
    return [s.version for s in stack]


def test_rollback_walks_back_rather_than_toggling():
    h = [sw(1, "1.0", "add"), sw(2, "1.1"), sw(3, "1.2")]
    assert rollback_target(h)[0] == "1.1"
    h.append(sw(4, "1.1", "rollback"))
    assert versions(undo_stack(h)) == ["1.0", "1.1"]
    assert rollback_target(h)[0] == "1.0"
    h.append(sw(5, "1.0", "rollback"))
    with pytest.raises(NotFound):
        rollback_target(h)


def test_use_after_rollback_pushes():
    h = [sw(1, "1.0", "add"), sw(2, "2.0"), sw(3, "1.0", "rollback"), sw(4, "3.0")]
    assert versions(undo_stack(h)) == ["1.0", "3.0"]
    assert rollback_target(h)[0] == "1.0"


def test_named_rollback_and_unknown_version():
    h = [sw(1, "1.0", "add"), sw(2, "2.0"), sw(3, "3.0")]
    v, d = rollback_target(h, "1.0")
    assert v == "1.0" and d == h[0].manifest
    with pytest.raises(NotFound):
        rollback_target(h, "9.9")


def test_empty_history():
    with pytest.raises(NotFound):
        rollback_target([])


def test_record_round_trip():
    s = sw(7, "1.0", "rollback", previous="2.0")
    assert Switch.decode(s.encode(), "x") == s


def test_rollback_pops_even_when_the_same_version_repeats():
    # Found by the state machine: `use` of the version that is already current, then rollback.
    h = [sw(1, "1.0", "add"), sw(2, "1.0"), sw(3, "1.0", "rollback")]
    assert versions(undo_stack(h)) == ["1.0"]
    with pytest.raises(NotFound):
        rollback_target(h)


def test_the_reported_stuck_rollbacks():
    # use 1.1 twice, then rollback: back to 1.0, not "1.1 -> 1.1" (a repeat only replaces the top)
    h = [sw(1, "1.0", "add"), sw(2, "1.1"), sw(3, "1.1")]
    assert rollback_target(h)[0] == "1.0"
    # use 1.1; use 1.2; rollback; rollback 1.2; rollback -> 1.1, as `cas log` shows it came before
    h = [sw(1, "1.0", "add"), sw(2, "1.1"), sw(3, "1.2"), sw(4, "1.1", "rollback"), sw(5, "1.2", "rollback")]
    assert versions(undo_stack(h)) == ["1.0", "1.1", "1.2"]
    assert rollback_target(h)[0] == "1.1"
