"""BLEU and chrF with sacreBLEU on detokenized text, reported with sacreBLEU's signatures."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

from sacrebleu.metrics import BLEU, CHRF


@dataclass
class Scores:
    bleu: float
    chrf: float
    bleu_signature: str
    chrf_signature: str
    bleu_detail: str
    n: int
    brevity_penalty: float = 1.0
    length_ratio: float = 1.0  # hypothesis / reference length in BLEU's 13a tokens

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (f"{self.bleu_detail}\n{self.bleu_signature}\n"
                f"chrF2 = {self.chrf:.2f}\n{self.chrf_signature}")


def score(hypotheses: Sequence[str], references: Sequence[str]) -> Scores:
    """Corpus BLEU (13a tokenization, exp smoothing) and chrF2 of aligned hypothesis/reference lists.

    Raises:
        ValueError: the lists differ in length (names both counts).
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references: "
                         f"the files must have one line per segment")
    bleu, chrf = BLEU(), CHRF()
    b = bleu.corpus_score(list(hypotheses), [list(references)])
    c = chrf.corpus_score(list(hypotheses), [list(references)])
    return Scores(bleu=round(b.score, 2), chrf=round(c.score, 2),
                  bleu_signature=str(bleu.get_signature()), chrf_signature=str(chrf.get_signature()),
                  bleu_detail=str(b), n=len(hypotheses), brevity_penalty=round(b.bp, 4),
                  length_ratio=round(b.sys_len / b.ref_len, 4) if b.ref_len else 0.0)
