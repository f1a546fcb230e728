"""Terminal controls taken out of the text an endpoint sent, before a terminal sees it (`streamkit chat`): a
hostile or compromised endpoint could otherwise write the clipboard (OSC 52), retitle the window or clear the
screen."""

from __future__ import annotations

import re

__all__ = ["TerminalSanitizer", "sanitized"]

# Where the text may hold a control, which is where `TerminalSanitizer` leaves the fast path: C0 but tab and
# newline, DEL, and C1.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_GROUND, _ESCAPE, _ESCAPE_INTERMEDIATE, _CSI, _STRING = range(5)


class TerminalSanitizer:
    r"""Strips terminal controls from text that arrives in pieces: `feed(text)` returns the text that is safe
    to print, holding no text back, only the state of a sequence a piece ended in.

    What it strips, as ECMA-48 and DEC's VT parser (vt100.net/emu/dec_ansi_parser) read them:
    - C0 controls but newline and tab, and DEL. So `\r` goes too: CRLF becomes LF, and a lone CR can no
      longer return to the line's start to write over it.
    - Escape sequences, each whole: ESC and its intermediates and final (`ESC c`, `ESC ( B`), CSI
      (`ESC [` params, intermediates, final: colours, cursor moves, `2J` clears), and the control strings
      OSC (`ESC ]`: titles, OSC 52 clipboard writes), DCS, SOS, PM and APC (`ESC P`, `X`, `^`, `_`) up to
      their end: ST (`ESC \`), or BEL.
    - C1 controls (U+0080 to U+009F), each read as ESC and its 7-bit partner, as a terminal that honours
      them would: U+009B is CSI, U+009D OSC, U+009C ST.

    As in a terminal, CAN and SUB cancel a sequence and ESC starts a new one anywhere, and newline and tab
    inside an escape or CSI sequence are kept (a terminal executes them there). A character the sequence
    cannot hold (anything from U+00A0 on, outside a string) ends it and is kept. Printable text, any
    script, emoji and combining marks included, is never changed. The output never holds a C0 control but
    newline and tab, nor DEL, nor a C1 control; and however the text is cut into pieces, the output is the
    same. Use one per text: an unterminated string in one must not swallow the next.
    """

    def __init__(self) -> None:
        self._state = _GROUND

    def feed(self, text: str) -> str:
        """The safe part of `text`, given the pieces before it."""
        kept: list[str] = []
        position = 0
        while position < len(text):
            if self._state == _GROUND:
                control = _CONTROL.search(text, position)
                end = len(text) if control is None else control.start()
                kept.append(text[position:end])
                position = end
                if control is None:
                    break
            character = text[position]
            position += 1
            if self._step(character):
                kept.append(character)
        return "".join(kept)

    def _step(self, character: str) -> bool:
        """Moves through a control or a character of a sequence; says whether to keep it."""
        code = ord(character)
        if 0x80 <= code <= 0x9F:
            self._state = _ESCAPE
            code -= 0x40
        elif code == 0x1B:
            self._state = _ESCAPE
            return False
        if code in (0x18, 0x1A):  # CAN, SUB
            self._state = _GROUND
            return False
        if self._state == _STRING:
            if code == 0x07:  # BEL, xterm's end of OSC
                self._state = _GROUND
            return False
        if code < 0x20 or code == 0x7F:
            return character in "\n\t"
        if code > 0x7F:
            self._state = _GROUND
            return True
        if self._state == _ESCAPE:
            if code == 0x5B:  # [
                self._state = _CSI
            elif code in (0x50, 0x58, 0x5D, 0x5E, 0x5F):  # P X ] ^ _
                self._state = _STRING
            elif code < 0x30:
                self._state = _ESCAPE_INTERMEDIATE
            else:
                self._state = _GROUND
        elif self._state == _ESCAPE_INTERMEDIATE:
            if code >= 0x30:
                self._state = _GROUND
        elif code >= 0x40:  # _CSI's final byte
            self._state = _GROUND
        return False


def sanitized(text: str) -> str:
    """`text` without its terminal controls."""
    return TerminalSanitizer().feed(text)
