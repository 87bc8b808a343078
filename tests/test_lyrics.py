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


DUET = """[verse 1: Ana]
Morning comes too soon
Leo: I will be there
[chorus: Ana & Leo]
Sing it all night long
[bridge]
Listen: the night is young
"""


def test_tags_and_prefixes_name_the_performers() -> None:
    lines = parse_lyrics(DUET, ["Ana", "Leo"])
    assert [(l.text, l.performers) for l in lines] == [
        ("Morning comes too soon", ("Ana",)), ("I will be there", ("Leo",)),
        ("Sing it all night long", ("Ana", "Leo")), ("Listen: the night is young", ())]
    assert [l.section for l in lines] == ["verse", "verse", "chorus", "bridge"]  # names are not in the section
    # without a visual bible that lists performers, a prefix is lyric text; tag names are still read
    plain = parse_lyrics(DUET)
    assert plain[1].text == "Leo: I will be there" and plain[2].performers == ("Ana", "Leo")


@pytest.mark.parametrize("tag,match", [("[chorus: ]", "names no performer"), ("[chorus: Ana &]", "names no performer"),
                                       ("[chorus: Ana & Lio]", "'Lio' in \\[chorus: Ana & Lio\\] is not in")])
def test_a_malformed_performer_tag_is_one_line(tag: str, match: str) -> None:
    with pytest.raises(MvgenError, match=match) as info:
        parse_lyrics(f"{tag}\nla la la", ["Ana", "Leo"])
    assert "\n" not in str(info.value)


def test_a_duet_segment_asks_for_a_two_shot_of_its_performers() -> None:
    from mvgen.stages.prompts import PromptBuilder

    song = {"visual": {"performers": [{"name": "Ana", "description": "a woman in a red coat"},
                                      {"name": "Leo", "description": "a man with a beard"}]}, "title": "t"}
    builder = PromptBuilder(lyric="{character}, {shot}, singing", instrumental="{shot} of a street")
    base = {"index": 0, "name": "seg_000", "kind": "lyric", "text": "la", "section": "chorus", "mood": "euphoric"}
    duet = builder.build(song, {**base, "performers": ["Ana", "Leo"]}, 2)
    assert all(p["prompt"] == "a woman in a red coat and a man with a beard, two-shot of both singers, singing"
               for p in duet)
    solo = builder.build(song, {**base, "performers": ["Leo"]}, 1)
    assert solo[0]["prompt"].startswith("a man with a beard, ") and "two-shot" not in solo[0]["prompt"]
