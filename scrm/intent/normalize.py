"""Text normalisation before intent matching: one canonical form for what customers type.

:func:`normalize` applies, in order:

1. Unicode NFKC: full-width digits, latin letters and punctuation become half-width (``５０万`` → ``50万``,
   ``ＳＵＶ`` → ``SUV``, ``？`` → ``?``), compatibility forms are unfolded.
2. Traditional → Simplified Chinese with OpenCC's ``t2s`` dictionaries (phrase-aware, so ``乾淨`` → ``干净``
   but ``乾隆`` stays). The converter is pure Python and slow (~25 µs per message), so it only runs on texts
   that contain at least one character the dictionary would change; simplified text passes straight through.
3. Latin letters lowercased (``SUV`` → ``suv``, ``4S店`` → ``4s店``).
4. Runs of whitespace collapsed to one space, ends stripped.

Offsets reported by the classifier are offsets in the normalised text. Rules files are normalised with the
same function, so operators may write keywords in any width or script.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from importlib import resources

import opencc

__all__ = ["normalize", "traditional_characters"]

_SPACES = re.compile(r"\s+")
_DICTIONARY_PACKAGE = "opencc"
_CHARACTER_TABLE = "dictionary/TSCharacters.txt"


@lru_cache(maxsize=1)
def traditional_characters() -> frozenset[str]:
    """Every character the ``t2s`` character table maps to something else (the gate for the converter)."""
    table = resources.files(_DICTIONARY_PACKAGE).joinpath(_CHARACTER_TABLE).read_text(encoding="utf-8")
    changed: set[str] = set()
    for line in table.splitlines():
        source, _, targets = line.partition("\t")
        first = targets.split(" ", 1)[0]
        if len(source) == 1 and first and first != source:
            changed.add(source)
    return frozenset(changed)


@lru_cache(maxsize=1)
def _converter() -> opencc.OpenCC:
    return opencc.OpenCC("t2s")


def normalize(text: str) -> str:
    """The canonical form of ``text`` (NFKC, simplified, lowercase latin, single spaces)."""
    folded = unicodedata.normalize("NFKC", text)
    if not traditional_characters().isdisjoint(folded):
        folded = str(_converter().convert(folded))
    folded = folded.lower()
    return _SPACES.sub(" ", folded).strip()
