"""The answers of a comparison of a challenger objective with a reference ("does SCL give
better attributions than CE here?"), as the claim tables write them.

The values are the words in the files (``claim_table.csv`` and the reproduction reports read
them back); what a figure or a table shows is made from the member where it is shown
(:meth:`Verdict.label`).
"""
from __future__ import annotations

from ..registry import StrEnum


class Verdict(StrEnum):
    """One comparison's answer, at the image level (pairs of images) or at the model level
    (the seed as the unit)."""
    YES = "yes"                             # the challenger is significantly better
    NOT_SIGNIFICANT = "no (n.s.)"           # no significant difference
    REFERENCE_BETTER = "no (CE better)"     # the reference (CE, the study's) is significantly better
    TOO_FEW_SEEDS = "too few seeds"         # not a verdict: too few seeds to decide anything

    @property
    def decided(self) -> bool:
        """Whether anything was decided (every answer but :attr:`TOO_FEW_SEEDS`)."""
        return self is not Verdict.TOO_FEW_SEEDS

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
