"""`TerminalSanitizer`: what `streamkit chat` leaves of an endpoint's text before a terminal sees it. Each
case is fed whole, a character at a time, and cut in two at every position."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamkit.terminal import TerminalSanitizer

# (what the endpoint sends, what the terminal gets): each sequence between two words, which stay.
CASES = [
    ("copy \x1b]52;c;ZXZpbA==\x07 done", "copy  done"),  # OSC 52, ended by BEL
    ("copy \x1b]52;c;ZXZpbA==\x1b\\ done", "copy  done"),  # OSC 52, ended by ST
    ("title \x1b]0;pwned\x07 done", "title  done"),  # OSC 0
    ("title \x1b]2;pwned\x9c done", "title  done"),  # ended by 8-bit ST
    ("clear \x1b[2J\x1b[H done", "clear  done"),  # CSI 2J, cursor home
    ("red \x1b[1;31mtext\x1b[0m done", "red text done"),  # CSI with parameters
    ("move \x1b[?25l\x1b[10;20H\x1b[3 q done", "move  done"),  # private, parameters, intermediate
    ("eight \x9b2J\x9d0;pwned\x07 done", "eight  done"),  # 8-bit CSI and OSC
    ("next \x85line \x84 done", "next line  done"),  # other C1: NEL, IND
    ("sixel \x1bPq#0;2;0;0;0#0~~\x1b\\ done", "sixel  done"),  # DCS
    ("dcs \x90q#0\x9c done", "dcs  done"),  # 8-bit DCS
    ("apc \x1b_Gf=100;AAAA\x1b\\ pm \x1b^private\x1b\\ sos \x1bXstring\x1b\\ done", "apc  pm  sos  done"),
    ("reset \x1bc charset \x1b(B align \x1b#8 done", "reset  charset  align  done"),  # ESC, intermediates
    ("bell \x07 back\x08space \x7f done", "bell  backspace  done"),  # C0 and DEL
    ("cr \r\nlf\rover done", "cr \nlfover done"),  # CRLF becomes LF, a lone CR goes
    ("tab\tand\nnewline", "tab\tand\nnewline"),
    ("cancel \x1b[12\x18J \x1b]0;x\x1a done", "cancel J  done"),  # CAN and SUB end a sequence
    ("within \x1b[1\n2m done", "within \n done"),  # a terminal executes LF inside CSI
    ("restart \x1b]0;t\x1b[2J done", "restart  done"),  # ESC ends a string, and begins its own
    ("wide \x1b[3é done", "wide é done"),  # what CSI cannot hold ends it
    ("end \x1b", "end "),  # a lone ESC at the end: nothing follows
    ("open \x1b]52;c;never ended", "open "),
    ("😀 e\u0301 שָׁלוֹם مرحبا 你好 \u200d\u202e", "😀 e\u0301 שָׁלוֹם مرحبا 你好 \u200d\u202e"),
]

# Every complete sequence of CASES, and more, to put between texts of any kind.
SEQUENCES = [
    "\x1b]52;c;ZXZpbA==\x07", "\x1b]52;c;ZXZpbA==\x1b\\", "\x1b]0;pwned\x07", "\x9d0;pwned\x9c", "\x1b[2J",
    "\x1b[1;31m", "\x1b[?25l", "\x1b[3 q", "\x9b2J", "\x85", "\x1bPq#0~\x1b\\", "\x90q\x9c", "\x1b_G\x1b\\",
    "\x1b^p\x1b\\", "\x1bXs\x1b\\", "\x1bc", "\x1b(B", "\x1b#8", "\x07", "\x00", "\x7f", "\r", "\x1b[1\x18",
]  # fmt: skip


def sanitized(*pieces: str) -> str:
    sanitizer = TerminalSanitizer()
    return "".join(sanitizer.feed(piece) for piece in pieces)


@pytest.mark.parametrize(("sent", "shown"), CASES)
def test_whole_and_a_character_at_a_time(sent: str, shown: str) -> None:
    assert sanitized(sent) == shown
    assert sanitized(*sent) == shown


@pytest.mark.parametrize(("sent", "shown"), CASES)
def test_cut_in_two_anywhere(sent: str, shown: str) -> None:
    for cut in range(len(sent) + 1):
        assert sanitized(sent[:cut], sent[cut:]) == shown, cut


def test_a_piece_is_given_back_whole_when_it_can_be() -> None:
    # Text is held back by nothing, not even by an escape that a piece ends in or begins with.
    sanitizer = TerminalSanitizer()
    assert sanitizer.feed("one \x1b") == "one "
    assert sanitizer.feed("[31mtwo \x1b]0;") == "two "
    assert sanitizer.feed("title") == ""
    assert sanitizer.feed("\x07three") == "three"


def is_control(character: str) -> bool:
    """What a terminal acts on rather than shows, as Unicode says: C0, DEL and C1 (newline and tab are let
    through)."""
    return unicodedata.category(character) == "Cc" and character not in "\n\t"


# Text that is mostly the pieces of sequences, so that a draw starts, ends and cuts them often.
FRAGMENTS = ["\x1b", "\x9b", "\x9c", "\x9d", "\x90", "[", "]", "P", "_", "\\", "\x07", "\x18", ";", "2", "J",
             "m", " ", "(", "é", "😀", "\n", "\t", "\r", "\x7f", "\x85"]  # fmt: skip
hostile_text = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=4)).map("".join)
plain_text = st.text(st.characters(codec="utf-8").filter(lambda c: not is_control(c)))


@settings(max_examples=1000, deadline=None)
@given(hostile_text, st.lists(st.integers(0, 64)))
def test_how_the_text_is_cut_never_changes_what_is_shown(text: str, cuts: list[int]) -> None:
    ends = sorted({min(cut, len(text)) for cut in cuts})
    pieces = [text[start:end] for start, end in zip([0, *ends], [*ends, len(text)], strict=True)]
    assert sanitized(*pieces) == sanitized(text)


@settings(max_examples=1000, deadline=None)
@given(hostile_text | st.text())
def test_no_control_is_ever_shown(text: str) -> None:
    assert not any(is_control(c) for c in sanitized(text))
    assert not any(is_control(c) for c in sanitized(*text))


@settings(max_examples=500, deadline=None)
@given(plain_text, st.sampled_from(SEQUENCES), plain_text)
def test_text_is_kept_and_a_sequence_between_goes(before: str, sequence: str, after: str) -> None:
    assert sanitized(before) == before
    assert sanitized(before, sequence, after) == before + after
