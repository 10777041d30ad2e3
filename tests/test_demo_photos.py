"""`fruits demo DIR`: the demo photos a fresh machine runs the pipeline on, in a Fruits-360 layout."""

from PIL import Image

from fruits.tools.cli import main


def test_fruits_demo_writes_labelled_photos_and_the_odd_files(tmp_path, capsys):
    assert main(["demo", str(tmp_path / "landing"), "--per-class", "2"]) == 0
    photos = sorted(p for p in (tmp_path / "landing").rglob("*.jpg") if p.stat().st_size and not p.name.startswith("."))
    assert photos and all(p.parent.parent.name in ("Training", "Test") for p in photos)
    with Image.open(photos[0]) as img:
        assert img.size == (100, 100)
    assert "demo images" in capsys.readouterr().out


def test_fruits_demo_without_odd_files_writes_only_photos(tmp_path):
    assert main(["demo", str(tmp_path), "--per-class", "1", "--no-odd-files"]) == 0
    assert {p.suffix for p in tmp_path.rglob("*") if p.is_file()} == {".jpg"}
