"""The journal of work in flight: atomic entries that survive a reopen and vanish when done."""
import pytest

from agent.errors import WorkspaceError
from agent.journal import Journal


def test_entries_survive_a_new_journal_object_until_done(tmp_path):
    j = Journal(tmp_path / "journal")
    j.put("proposal-0007", {"stage": "evaluate", "proposal": {"name": "tanh", "zh": "误差"}})
    j.put("proposal-0008", {"stage": "propose"})
    again = Journal(tmp_path / "journal")
    assert again.get("proposal-0007")["proposal"]["zh"] == "误差"
    assert list(again.pending()) == ["proposal-0007", "proposal-0008"]
    again.done("proposal-0007")
    assert list(Journal(tmp_path / "journal").pending()) == ["proposal-0008"]
    assert again.get("proposal-0007") is None


def test_put_replaces_an_entry_and_leaves_no_temporary_files(tmp_path):
    j = Journal(tmp_path / "journal")
    j.put("k", {"stage": "propose"})
    j.put("k", {"stage": "record"})
    assert j.get("k") == {"stage": "record"}
    assert [p.name for p in (tmp_path / "journal").iterdir()] == ["k.json"]


def test_an_empty_journal_has_nothing_pending_and_done_is_idempotent(tmp_path):
    j = Journal(tmp_path / "absent")
    assert j.pending() == {} and j.get("x") is None
    j.done("x")


def test_keys_that_could_escape_the_folder_are_refused(tmp_path):
    with pytest.raises(WorkspaceError, match="journal key"):
        Journal(tmp_path).put("../evil", {})


def test_a_torn_entry_is_named_in_the_error(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(WorkspaceError, match="bad.json"):
        Journal(tmp_path).get("bad")
