"""Verification of CLIP candidates on the training image itself.

A CLIP pack (built from published embeddings) gives candidates: CLIP similarity is semantic, so two
photos of one landmark score high. For the top candidates above a CLIP cut, `verify_reports` fetches
the training image from its URL (`online.py`: opt-in, bounded as a recipe's image fetches, a disk
cache with a size cap) and compares it with the checked image (`compare.py`: SSCD on the whole image
and its regions, and PDQ); the candidate's verdict becomes SSCD's tier on that pair. It runs as its
own step after the search (image -> embedding -> search -> verify -> report), never while sampling.
"""

from lib_replicheck.verification.step import CLIP_CUT, MAX_CANDIDATES, Verifier, verify_reports

__all__ = ["CLIP_CUT", "MAX_CANDIDATES", "Verifier", "verify_reports"]
