"""The command lines refuse a bad argument in one line, exit status 2, before any work."""
import pytest

from xai_utils import pipeline, reproduction


@pytest.mark.parametrize("main, args, words", [
    (pipeline.main, ["--bogus"], "unrecognized arguments: --bogus"),
    (pipeline.main, ["--stage", "nope"], "argument --stage: invalid"),
    (pipeline.main, ["--jobs"], "argument --jobs: expected one argument"),
    (reproduction.main, ["--check"], "argument --check: expected one argument"),
    (reproduction.main, ["--bogus"], "unrecognized arguments: --bogus"),
])
def test_a_bad_argument_is_one_line_and_exit_2(main, args, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(args)
    out, err = capsys.readouterr()
    assert stop.value.code == 2 and out == ""
    line, = err.splitlines()
    assert line.startswith("python -m xai_utils.") and words in line and line.endswith("(see --help)"), line
    assert list(tmp_path.iterdir()) == []
