"""The answers of a comparison of a challenger objective with a reference ("does SCL give
better attributions than CE here?"), as the claim tables write them.

A table writes a verdict in words that name the reference (:meth:`Verdict.words`: "no (CE
better)", "no (baseline better)" for a brought model labelled so) and a figure reads them back
(:meth:`Verdict.read`); what a legend shows is :meth:`Verdict.label`.
"""
from __future__ import annotations

from ..registry import StrEnum


class Verdict(StrEnum):
    """One comparison's answer, at the image level (pairs of images) or at the model level
    (the seed as the unit)."""
    YES = "yes"                             # the challenger is significantly better
    NOT_SIGNIFICANT = "no (n.s.)"           # no significant difference
    REFERENCE_BETTER = "no (reference better)"   # the reference is significantly better
    TOO_FEW_SEEDS = "too few seeds"         # not a verdict: too few seeds to decide anything

    @property
    def decided(self) -> bool:
        """Whether anything was decided (every answer but :attr:`TOO_FEW_SEEDS`)."""
        return self is not Verdict.TOO_FEW_SEEDS

    def words(self, reference: str) -> str:
        """How a table writes it, naming the reference's label: "no (CE better)"."""
        return f"no ({reference} better)" if self is Verdict.REFERENCE_BETTER else self.value

    @classmethod
    def read(cls, text: str) -> "Verdict":
        """The verdict a table's words say (:meth:`words`)."""
        text = str(text)
        if text in cls._value2member_map_:
            return cls(text)
        if text.startswith("no (") and text.endswith(" better)"):
            return cls.REFERENCE_BETTER
        raise ValueError(f"not a verdict: {text!r}")

    def label(self, challenger: str, reference: str) -> str:
        """Words for a reader, with the objectives' labels: "SCL better than CE"."""
        return {Verdict.YES: f"{challenger} better than {reference}",
                Verdict.NOT_SIGNIFICANT: "no significant difference",
                Verdict.REFERENCE_BETTER: f"{reference} better than {challenger}",
                Verdict.TOO_FEW_SEEDS: "too few seeds"}[self]


def significance_verdict(significant: bool, challenger_better: bool) -> Verdict:
    """The image-level answer: a significant difference, and on whose side."""
    if not significant:
        return Verdict.NOT_SIGNIFICANT
    return Verdict.YES if challenger_better else Verdict.REFERENCE_BETTER
