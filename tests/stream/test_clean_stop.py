"""The clean stop: local saga stores are trusted at start only after a stop that left none of
their rows without a changelog record."""

from __future__ import annotations

from pathlib import Path

from tracker.stream.clean_stop import CleanStop


def stores(tabledir: Path, *names: str) -> None:
    for name in names:
        (tabledir / name).mkdir(parents=True)
        (tabledir / name / "000001.log").write_bytes(b"rows")


def test_after_a_stop_that_was_not_clean_the_stores_are_removed(tmp_path: Path) -> None:
    stores(tmp_path, "sagas-0.db", "sagas-1.db", "sagas-backups", "other-0.db")
    removed = CleanStop(tmp_path, "sagas").begin()
    assert [p.name for p in removed] == ["sagas-0.db", "sagas-1.db"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other-0.db", "sagas-backups"]  # another table's: kept


def test_after_a_clean_stop_the_stores_are_kept_and_the_next_stop_decides_again(tmp_path: Path) -> None:
    stores(tmp_path, "sagas-0.db")
    first = CleanStop(tmp_path, "sagas")
    assert first.end(unconfirmed=0)
    assert CleanStop(tmp_path, "sagas").begin() == [] and (tmp_path / "sagas-0.db").exists()
    # That start took the marker: a kill now (no end) leaves the stores untrusted.
    assert [p.name for p in CleanStop(tmp_path, "sagas").begin()] == ["sagas-0.db"]


def test_a_stop_with_rows_not_yet_in_the_changelog_is_not_clean(tmp_path: Path) -> None:
    stores(tmp_path, "sagas-0.db")
    assert not CleanStop(tmp_path, "sagas").end(unconfirmed=3)
    assert [p.name for p in CleanStop(tmp_path, "sagas").begin()] == ["sagas-0.db"]


def test_a_first_start_removes_nothing(tmp_path: Path) -> None:
    assert CleanStop(tmp_path / "tables", "sagas").begin() == []
