"""Checks that fail a trace before it is finished, for `generate --preset` with a streaming teacher.

R1's most expensive failures loop or drift into another language until `max_tokens`. Only rules that text added
later cannot undo are applied to a trace in flight, so a trace that would pass `distill filter` is never stopped:
- `repetition`: one substantial line more than `max_line_repeats` times (later text adds lines, removes none);
- `long_paragraph`: a paragraph past `max_paragraph_chars` (a paragraph only grows);
- `code_block`: a code fence in the reasoning of a non-code problem (it stays in the reasoning);
- `language_mix`: more words in another script than `max_foreign_share` of the most words the whole reasoning can
  hold, one per token of `max_tokens` (so its share stays above the threshold, however the trace goes on).
The n-gram share and the language-ID windows can fall as text is added: they wait for the whole trace. A stopped
trace is recorded with its text so far and `finish_reason: abort`; `distill filter` runs these same rules on that
text and finds the same code.
"""

from __future__ import annotations

from distill import language
from distill.filters.config import FilterPreset
from distill.filters.langcheck import foreign_words
from distill.filters.readability import code_in_reasoning, longest_paragraph, repeated_line

READABILITY_CODES = ("repetition", "long_paragraph", "code_block")


def failed_already(
    reasoning: str, domain: str, target: str | None, preset: FilterPreset, max_tokens: int | None
) -> tuple[str, str] | None:
    """(reject code, what was seen) when `reasoning`, however it goes on, cannot pass the preset; else None."""
    read = preset.readability
    if read.enabled:  # the readability checks that only grow with the text (distill/filters/readability.py)
        if (loop := repeated_line(reasoning, read)) is not None:
            return "repetition", f"stopped in flight: {loop[0][:80]!r} {loop[1]} times"
        limit = read.max_paragraph_chars
        if limit is not None and (longest := longest_paragraph(reasoning)) > limit:
            return "long_paragraph", f"stopped in flight: a paragraph of {longest:,} characters"
        if code_in_reasoning(reasoning, domain, read):
            return "code_block", "stopped in flight: a code fence in the reasoning"
    lang = preset.language
    if lang.enabled and target is not None and max_tokens and not reasoning.isascii():
        foreign, _, _ = foreign_words(language.prose(reasoning), target)
        if foreign >= lang.min_foreign_words and foreign > lang.max_foreign_share * max_tokens:
            return "language_mix", (
                f"stopped in flight: {foreign:,} words in other scripts, more than {lang.max_foreign_share:g} of the "
                f"{max_tokens:,} the trace may reach"
            )
    return None
