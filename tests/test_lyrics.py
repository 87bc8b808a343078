import pytest

from mvgen.errors import MvgenError
from mvgen.lyrics import parse_lyrics, plain_text


def test_sections_are_metadata_not_text() -> None:
    lines = parse_lyrics("[verse]\nfirst line\nsecond line\n\n[chorus]\nhook\n[verse 2]\nthird\n[chorus]\nhook")
    assert [l.text for l in lines] == ["first line", "second line", "hook", "third", "hook"]
    assert [(l.section, l.section_index) for l in lines] == [
        ("verse", 1), ("verse", 1), ("chorus", 1), ("verse", 2), ("chorus", 2)]
    assert plain_text(lines) == "first line\nsecond line\nhook\nthird\nhook"
    assert "[" not in plain_text(lines)


def test_untagged_lines_are_a_verse() -> None:
    lines = parse_lyrics("just a line")
    assert (lines[0].section, lines[0].section_index, lines[0].index) == ("verse", 1, 0)


@pytest.mark.parametrize("lyrics", ["", "   \n\n", "[verse]\n[chorus]\n"])
def test_no_lines_is_a_clear_error(lyrics: str) -> None:
    with pytest.raises(MvgenError, match="no lyric lines"):
        parse_lyrics(lyrics)
