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
