"""The bad-input probe's classifier: known outcomes land in the right class (not the whole run)."""

import errno
import os
import time

import probe
import pytest
from probe_cases import file_size_limit, full_disk

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the probe forks a child per case")


def outcome(case, shared=None, tmp_path=None):
    raw = probe.run_case(case, shared or {}, tmp_path, 0)
    return probe.classify(case, raw), raw


def raise_(error):
    raise error


def pil_crash(ctx):
    import io

    from PIL import Image

    Image.new("RGB", (8, 8)).save(io.BytesIO(), format="NOPE")


def heavy_then_clear(ctx):
    probe.HEAVY["steps"] += 1  # as a denoising step does, through the transformer's hook
    raise ValueError("seed must be a whole number")


def overwrite(ctx):
    path = ctx.protect(ctx.tmp / "mine.txt")
    path.write_text("gone")


def print_token(ctx):
    print(os.environ.get("HF_TOKEN"))


CASES = [
    (probe.Case("t", "bare KeyError", lambda c: {}["seed"], names=("seed",)), "unclear error"),
    (probe.Case("t", "Python's own words", lambda c: 1 < "x", names=("seed",)), "unclear error"),
    (probe.Case("t", "message not naming the argument", lambda c: raise_(ValueError("bad value")), names=("seed",)),
     "unclear error"),
    (probe.Case("t", "clear", lambda c: raise_(ValueError("seed must be a whole number, not 'x'.")), names=("seed",)),
     "clear early error"),
    (probe.Case("t", "raised inside PIL", pil_crash, names=("format",)), "deep crash"),
    (probe.Case("t", "clear but after heavy work", heavy_then_clear, names=("seed",)), "late error"),
    (probe.Case("t", "returned where an error was due", lambda c: 1, names=("seed",)), "silent wrong result"),
    (probe.Case("t", "returned, check holds", lambda c: 1, expect="ok", check=lambda r, c: r == 1), "ok"),
    (probe.Case("t", "returned, check fails", lambda c: 1, expect="ok", check=lambda r, c: r == 2), "silent wrong result"),
    (probe.Case("t", "valid input refused", lambda c: raise_(ValueError("seed is wrong")), expect="ok", names=("seed",)),
     "refused valid input"),
    (probe.Case("t", "hang", lambda c: time.sleep(30), timeout=1.0), "hang"),
    (probe.Case("t", "overwrites the user's file", overwrite, expect="ok"), "lost work"),
    (probe.Case("t", "prints the token", print_token, expect="ok"), "leak"),
    (probe.Case("t", "full disk, nothing lost", lambda c: raise_(OSError(errno.ENOSPC, "No space")), any_error=True), "ok"),
]


@pytest.mark.parametrize("case, expected", CASES, ids=[c.name for c, _ in CASES])
def test_known_outcomes_are_classified(case, expected, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", probe.FAKE_TOKEN)
    klass, raw = outcome(case, tmp_path=tmp_path)
    assert klass == expected, raw


def test_a_real_clear_error_of_generate_is_clear(tiny_pipe, tmp_path):
    import helpers

    case = probe.Case("generate", "seed=-1", lambda c: helpers.generate(c.pipe, "a cat", seed=-1), names=("seed",))
    klass, raw = outcome(case, {"pipe": tiny_pipe}, tmp_path)
    assert klass == "clear early error", raw
    assert raw.repo_frame.startswith(str(probe.Path(helpers.__file__).parent))


def test_full_disk_writes_what_fits_then_raises_enospc(tmp_path):
    path = tmp_path / "results.csv"
    with full_disk(r"^results\.csv$", 5), pytest.raises(OSError) as raised:
        with open(path, "w") as f:
            f.write("0123456789")
    assert raised.value.errno == errno.ENOSPC
    assert path.read_text() == "01234"  # the partial file a real full disk leaves
    (tmp_path / "other.csv").write_text("0123456789")  # other names are not affected


def test_full_disk_also_reaches_the_project_writers_and_their_temporaries(tmp_path):
    from helpers.output_folders import write_atomically
    from helpers.studies.results import append_row

    with full_disk(r"^results\.csv$", 5), pytest.raises(OSError) as raised:
        write_atomically(tmp_path / "results.csv", "0123456789")  # os.fdopen on ".results.csv.partial-x"
    assert raised.value.errno == errno.ENOSPC and list(tmp_path.iterdir()) == []
    with full_disk(r"^rows\.csv$", 5), pytest.raises(OSError) as raised:
        append_row({"job_id": 0}, tmp_path / "rows.csv")  # os.write
    assert raised.value.errno == errno.ENOSPC and not (tmp_path / "rows.csv").exists()  # no 0-byte file left
    fd = os.open(tmp_path / "rows.csv", os.O_WRONLY | os.O_CREAT)
    assert os.write(fd, b"0123456789") == 10  # the patch is undone after the block
    os.close(fd)


def test_file_size_limit_stops_any_writer(tmp_path):
    pid = os.fork()
    if pid == 0:  # the limit is per process: try it in a child
        try:
            with file_size_limit(4):
                (tmp_path / "x.bin").write_bytes(b"0123456789")
        except OSError as e:
            os._exit(0 if e.errno == errno.EFBIG else 2)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert (tmp_path / "x.bin").read_bytes() == b"0123"


def test_about_600_cases_with_unique_names_and_stated_expectations():
    from probe_cases import all_cases

    cases = all_cases()
    assert len(cases) >= 600
    names = [(c.area, c.name) for c in cases]
    assert len(set(names)) == len(names)
    assert all(c.expect in ("ok", "error") for c in cases)
    assert all(c.names or c.expect == "ok" or c.any_error or c.check for c in cases)
    from probe_cases import ISSUE_20

    listed = [name for names in ISSUE_20.values() for name in names]
    assert set(listed) <= {c.name for c in cases}  # every input issue 20 lists is re-tried by name


def test_summary_lists_every_outcome_that_is_not_ok():
    records = [dict(area="a", name="x", item="", expect="error", outcome="unclear error", line="[a] x: KeyError"),
               dict(area="b", name="y", item="", expect="ok", outcome="ok", line="[b] y: ok")]
    text = probe.summary(records)
    assert "2 cases: 1 ok, 1 unclear error" in text
    assert "[a] x: KeyError" in text and "[b] y" not in text
