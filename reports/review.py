"""A hand-written review (the seed's five-section Markdown with star scores) read as claims, to set each claim next
to what was measured: "review says 4/5 — measured 1.0/5 because …".

Sections are found by their numbered top-level headings ``## 1.`` … ``## 5.`` (README, equivalence, bug risk,
logging, JAX performance — the rubric's order), in any language. A section's claim is its overall rating: the
rating under a "종합 평가"/"overall"/"summary" sub-heading when there is one, else its first rating. A rating is
``(k/5)`` (usually after stars) or, where a section gives no number, the text of its first ``**평가: …**`` /
``**Rating: …**`` line (e.g. "✅ mostly equivalent").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_SECTION = re.compile(r"^##\s+([1-5])\.\s*(.+?)\s*$", re.MULTILINE)
_SCORE = re.compile(r"\((\d(?:\.\d)?)\s*/\s*5\)")
_VERDICT = re.compile(r"^\*\*(?:평가|Rating|Verdict|Score)\s*:\s*(.+?)\*\*", re.IGNORECASE)
_LABELLED = re.compile(r"^\*\*[^*]+\*\*\s*:\s*\S")
_OVERALL = re.compile(r"^#{3,4}\s+(?:\d+(?:\.\d+)*\s+)?(?:종합|overall|summary).*$", re.MULTILINE | re.IGNORECASE)


class ReviewFormatError(ValueError):
    """The file has none of the five numbered section headings with a rating."""


@dataclass(frozen=True)
class Claim:
    """What the hand-written review says about one section (``stars`` None when it gives only words)."""

    number: int
    heading: str
    stars: float | None
    text: str

    @property
    def says(self) -> str:
        return f"{self.stars:g}/5" if self.stars is not None else self.text


def _rating_line(text: str, labelled: bool) -> str | None:
    """The first rating line of ``text``: one with ``(k/5)`` or a bold ``**평가: …**``/``**Rating: …**`` line, and
    with ``labelled`` (under an overall heading) any bold ``**label**: value`` line."""
    for line in text.splitlines():
        stripped = line.strip()
        if _SCORE.search(stripped) or _VERDICT.match(stripped) or (labelled and _LABELLED.match(stripped)):
            return stripped.replace("**", "").strip()
        if stripped.startswith("#"):
            return None
    return None


def _rating(body: str) -> tuple[float | None, str] | None:
    """(stars, text) of a section: its overall verdict lines joined, else its first rating line."""
    lines = [line for m in _OVERALL.finditer(body) if (line := _rating_line(body[m.end():].lstrip("\n"), True))]
    if not lines:
        first = next((line for m in re.finditer(r"^.*$", body, re.MULTILINE)
                      if (line := _rating_line(m.group(0), False))), None)
        lines = [first] if first else []
    if not lines:
        return None
    score = next((m for line in lines if (m := _SCORE.search(line))), None)
    return (float(score.group(1)) if score else None), "; ".join(lines)


def parse_review(text: str) -> list[Claim]:
    """The claims of a hand-written review, one per numbered section that carries a rating."""
    heads = list(_SECTION.finditer(text))
    claims = []
    for i, head in enumerate(heads):
        body = text[head.end(): heads[i + 1].start() if i + 1 < len(heads) else len(text)]
        rating = _rating(body)
        if rating is not None:
            claims.append(Claim(int(head.group(1)), head.group(2), rating[0], rating[1]))
    if not claims:
        raise ReviewFormatError("no '## 1.' ... '## 5.' section with a rating such as '(4/5)' or '**Rating: ...**'")
    return claims


def claims_vs_evidence(claims: list[Claim], sections: list[Any]) -> list[dict[str, Any]]:
    """One row per rubric section: the review's claim, the measured score, and why (the deductions applied or the
    reason it was not measured). ``sections`` are :class:`reports.scoring.SectionScore` in rubric order."""
    by_number = {c.number: c for c in claims}
    rows = []
    for number, s in enumerate(sections, start=1):
        claim = by_number.get(number)
        hits = [a for a in s.applied if a.count]
        if not s.measured:
            why = s.not_measured_reason
        elif hits:
            why = "; ".join(f"{a.rule} × {a.count} (−{a.deducted})" for a in hits)
        else:
            why = f"5★ rule met: {s.five_stars}"
        agree = None
        if claim is not None and claim.stars is not None and s.score is not None:
            agree = abs(claim.stars - s.score) < 1
        rows.append({"section": s.title, "review": claim.says if claim else "no claim",
                     "review_heading": claim.heading if claim else "", "measured": s.stars if s.score is None
                     else f"{s.score}/5", "agrees": agree, "why": why})
    return rows
