"""Bad inputs get one line naming the setting, with "did you mean", before any work, and a
failed run leaves nothing behind (issue 27, item 4)."""

from __future__ import annotations

import pytest
from PIL import Image

from transferscope.cli import main


def _one_class(root):
    for split in ("train", "val"):
        (root / split / "a").mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20, 20), (50 * i, 0, 0)).save(root / split / "a" / f"{i}.png")
    return root


def test_one_class_fails_and_leaves_no_run_directory(tmp_path, capsys):
    data = _one_class(tmp_path / "one")
    out = tmp_path / "run"
    assert main(["train", "--arch", "baseline_cnn", "--init", "random", "--data", str(data),
                 "--out", str(out), "--epochs", "1", "--image-size", "16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "1 class (a); a classifier needs at least two classes" in err and "\n" not in err
    assert not out.exists()  # not even the lock file


@pytest.mark.parametrize("args, expected", [
    (["--arch", "efficentnet_lite0"], "did you mean 'efficientnet_lite0'?"),
    (["--arch", "baseline_cnn", "--image-size", "4"],
     "option 'image_size': Input should be greater than or equal to 8 (got 4)"),
    (["--arch", "baseline_cnn", "--recipe", "paper000-finetun"],
     "did you mean 'paper000-finetune'?"),
])
def test_bad_settings_are_one_line_with_a_hint(tmp_path, capsys, args, expected):
    code = main(["train", "--data", str(tmp_path / "nodata"), "--out", str(tmp_path / "o"),
                 *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and expected in err and "\n" not in err and "pydantic.dev" not in err
    assert not (tmp_path / "o").exists()


def test_a_toml_key_typo_gets_did_you_mean(tmp_path):
    from transferscope.errors import ConfigError
    from transferscope.studies.spec import parse_study

    text = ("[target]\ndata = 'x'\n[source_images]\nveiws = 2\n"
            "[[models]]\nname = 'a'\narch = 'baseline_cnn'\n")
    with pytest.raises(ConfigError, match=r"veiws \(did you mean 'views'\?\)"):
        parse_study(text, "s.toml")


def test_an_analysis_typo_gets_did_you_mean():
    from transferscope.analyses import get_analysis
    from transferscope.errors import ConfigError

    with pytest.raises(ConfigError, match=r"did you mean 'distraction'\?"):
        get_analysis("distracton")
