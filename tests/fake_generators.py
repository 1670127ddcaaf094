"""Generators for worker subprocesses in fault tests, loaded through SHOPSYNTH_GENERATOR_FACTORY.

``create`` returns a deterministic generator whose text passes the quality
gates. Two variables make it misbehave:

- ``SHOPSYNTH_TEST_GENERATION_DELAY_S``: seconds each ``generate`` call sleeps.
- ``SHOPSYNTH_TEST_GENERATOR_BROKEN_FLAG``: a file path; while the file
  exists, ``generate`` raises ``RuntimeError``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

logger = logging.getLogger(__name__)

# Two-syllable nonsense words (529 of them), so texts of different prompts share few
# character shingles and the near-duplicate gate leaves them alone.
_SYLLABLES = [consonant + vowel for consonant in "bdfgklmnprstvz" for vowel in "aeiou"][:23]
_WORDS = [first + second for first in _SYLLABLES for second in _SYLLABLES]


class FakeGenerator:
    """Write a sentence chosen by a hash of the prompt, so equal prompts give equal text."""

    version = "fake-1"

    def __init__(self, *, delay_s: float = 0.0, broken_flag: Path | None = None) -> None:
        self.delay_s = delay_s
        self.broken_flag = broken_flag

    def generate(self, prompts: list[str], **kwargs) -> list[str]:
        if self.broken_flag is not None and self.broken_flag.exists():
            raise RuntimeError(f"fake generator broken while {self.broken_flag} exists")
        time.sleep(self.delay_s)
        return [self._text(prompt) for prompt in prompts]

    @staticmethod
    def _text(prompt: str) -> str:
        digest = hashlib.sha256(prompt.encode("utf-8")).digest()
        words = [_WORDS[int.from_bytes(digest[i:i + 2], "little") % len(_WORDS)] for i in range(0, 28, 2)]
        return f"The {' '.join(words[:7])}, with {' '.join(words[7:])}."


def create(settings) -> FakeGenerator:
    """Generator factory for ``SHOPSYNTH_GENERATOR_FACTORY=tests.fake_generators:create``."""
    flag = os.environ.get("SHOPSYNTH_TEST_GENERATOR_BROKEN_FLAG")
    generator = FakeGenerator(delay_s=float(os.environ.get("SHOPSYNTH_TEST_GENERATION_DELAY_S", "0")),
                              broken_flag=Path(flag) if flag else None)
    logger.info("fake generator delay_s=%.1f broken_flag=%s", generator.delay_s, generator.broken_flag)
    return generator
