"""Fresh run folders: numbered, created atomically, never reused."""

from helpers.output_folders import fresh_run_dir


def test_numbers_count_up_past_the_highest_existing(tmp_path):
    assert fresh_run_dir(tmp_path).name == "run-001"
    assert fresh_run_dir(tmp_path).name == "run-002"
    (tmp_path / "run-041").mkdir()
    (tmp_path / "notes").mkdir()
    assert fresh_run_dir(tmp_path).name == "run-042"


def test_existing_contents_are_left_alone(tmp_path):
    first = fresh_run_dir(tmp_path)
    (first / "result.csv").write_text("precious")
    second = fresh_run_dir(tmp_path / ".")
    assert second != first and (first / "result.csv").read_text() == "precious"
    assert list(second.iterdir()) == []


def test_write_atomically_leaves_the_old_file_or_the_whole_new_one(tmp_path):
    import pytest
    from disk_full import disk_full_after, is_disk_full

    from helpers.output_folders import write_atomically

    path = tmp_path / "table.json"
    write_atomically(path, "old")
    with pytest.raises(FileExistsError, match="nothing is overwritten"):
        write_atomically(path, "new")
    with disk_full_after(1000), pytest.raises(OSError) as full:
        write_atomically(path, "x" * 5000, overwrite=True)
    assert is_disk_full(full.value)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["table.json"]  # no temporary left
    write_atomically(path, "new", overwrite=True)
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["table.json"]


def test_finished_folder_appears_whole_or_not_at_all(tmp_path):
    import pytest

    from helpers.output_folders import finished_folder, leftovers

    target = tmp_path / "checkpoint"
    with pytest.raises(RuntimeError), finished_folder(target) as scratch:
        (scratch / "config.json").write_text("{}")
        raise RuntimeError("the weights failed")
    assert list(tmp_path.iterdir()) == [] and leftovers(tmp_path, "checkpoint") == []
    target.mkdir()  # an empty folder made for the save is taken over
    with finished_folder(target) as scratch:
        (scratch / "config.json").write_text("{}")
        (scratch / "weights").write_text("w")
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "weights"]
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint"]


def test_a_file_or_no_path_where_a_folder_is_expected_is_named(tmp_path):
    import pytest

    blocker = tmp_path / "run-folder"
    blocker.write_text("the user's notes")
    with pytest.raises(NotADirectoryError, match="root=.*is a file, not a folder"):
        fresh_run_dir(blocker)
    for root in (None, 123):
        with pytest.raises(TypeError, match="root must be a folder path"):
            fresh_run_dir(root)
    assert blocker.read_text() == "the user's notes"


def test_written_files_and_folders_get_the_usual_permissions(tmp_path):
    import os

    from helpers.output_folders import finished_folder, write_atomically

    umask = os.umask(0o022)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        assert (write_atomically(tmp_path / "atomic.txt", "x").stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)
        with finished_folder(tmp_path / "saved") as scratch:
            (scratch / "a").write_text("x")
        assert ((tmp_path / "saved").stat().st_mode & 0o777) == 0o755
    finally:
        os.umask(umask)


def test_a_read_only_root_is_named_not_a_bare_os_error(tmp_path):
    import pytest
    from read_only import read_only

    with read_only(tmp_path / "ro") as folder:
        with pytest.raises(PermissionError, match=r"root='.*ro' cannot be written to .*choose a folder"):
            fresh_run_dir(folder)
