"""Final answers taken out of a response: boxed math answers and multiple-choice letters.

Only the content after `</think>` is read: the reasoning is full of tentative answers.
"""

from __future__ import annotations

import re

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_LETTER_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{\s*(?:\\text(?:bf)?\s*\{\s*)?\(?([A-Z])\)?\s*\}?\s*\}")
_ANSWER_IS = re.compile(
    r"(?:final\s+)?answer\s*(?:is|:)?\s*(?:option\s*)?[:\-]?\s*\**\s*\(?\s*([A-Z])\s*\)?(?![A-Za-z])", re.I
)
_PAREN_LETTER = re.compile(r"\(([A-Z])\)")
MAX_SCAN = 20_000  # answers live at the end; a pathological 1 MB content must not cost a full scan


def box_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every `\\boxed{...}`, braces balanced; an unclosed box is skipped."""
    out = []
    for m in _BOX.finditer(text):
        depth, start = 1, m.end()
        for j in range(start, min(len(text), start + 2000)):
            ch = text[j]
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    out.append((m.start(), j + 1, text[start:j].strip()))
                    break
    return out


def boxed(text: str) -> list[tuple[int, str]]:
    """(position, content) of every `\\boxed{...}`."""
    return [(start, content) for start, _, content in box_spans(text)]


def final_boxed(content: str) -> list[str]:
    """The candidate final answers, best first: the last box, then all boxes of the last paragraph
    that holds one joined as a list (R1 often boxes each solution of a "find all" problem)."""
    tail = content[-MAX_SCAN:]
    boxes = boxed(tail)
    if not boxes:
        return []
    candidates = [boxes[-1][1]]
    last_par = tail.rfind("\n\n", 0, boxes[-1][0]) + 1
    together = [b for pos, b in boxes if pos >= last_par]
    if len(together) > 1:
        candidates.append(", ".join(together))
    return candidates


def choice_letter_span(content: str, options: int = 26) -> tuple[int, int, str] | None:
    """(start, end, letter) of the chosen option: `\\boxed{C}`, then "Answer: C" / "the answer is (C)", then a
    last "(C)"."""
    offset = max(0, len(content) - MAX_SCAN)
    tail = content[offset:]
    valid = {chr(ord("A") + k) for k in range(options)}
    for pattern in (_LETTER_BOX, _ANSWER_IS, _PAREN_LETTER):
        found = [m for m in pattern.finditer(tail) if m.group(1).upper() in valid]
        if found:
            m = found[-1]
            return offset + m.start(), offset + m.end(), m.group(1).upper()
    return None


def choice_letter(content: str, options: int = 26) -> str | None:
    """The chosen option (see choice_letter_span)."""
    found = choice_letter_span(content, options)
    return found[2] if found else None
