"""Safety checks: personal data patterns and blocked claims, in English and Chinese.

Both checks run on the NFKC form of the text, so full-width digits and letters
(``１３８``, ``ＦＤＡ``) are caught like their ASCII forms. Reasons name the kind
of personal data found, never the matched value, because the reason is
published in the enriched record.
"""

from __future__ import annotations

import functools
import logging
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path

from models.gate_result import CheckResult
from models.text_match import TermMatcher, has_cjk

logger = logging.getLogger(__name__)

# Medical, safety and absolute claims. The Chinese terms include the absolute terms
# that the Advertising Law of the PRC (2015 revision, art. 9(3)) forbids: 国家级, 最高级, 最佳.
DEFAULT_BLOCKLIST: tuple[str, ...] = (
    "cures", "cure cancer", "cures cancer", "miracle cure", "treats cancer", "prevents cancer",
    "fda approved", "clinically proven", "medically proven", "scientifically proven", "100% safe",
    "no side effects", "zero side effects", "guaranteed weight loss", "lose weight fast",
    "guaranteed results", "number one brand", "best in the world", "world's best",
    "治愈", "根治", "包治百病", "药到病除", "无副作用", "零副作用", "国家级", "最高级", "最佳",
    "第一品牌", "全网第一", "绝对安全", "100%安全", "百分百安全", "特效药", "神药", "抗癌", "防癌",
    "祖传秘方",
)

_TLDS = "com|net|org|cn|io|shop|store|info|biz|top|xyz|site|online|app"
_CONTACT_CUES = "微信号?|加微信?|v信|威信|wechat|weixin|vx|wx|qq号?|扣扣"


def _luhn_valid(digits: str) -> bool:
    """Return whether a digit string passes the Luhn checksum of payment card numbers."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _card_number(match: re.Match) -> bool:
    digits = re.sub(r"\D", "", match.group(0))
    return 13 <= len(digits) <= 19 and _luhn_valid(digits)


def _international_phone(match: re.Match) -> bool:
    return 8 <= len(re.sub(r"\D", "", match.group(0))) <= 15


def _contact_handle(match: re.Match) -> bool:
    # "WeChat payment" is a product feature, "WeChat: shop2024" and "加微信abcdef" are contacts.
    handle = match.group("handle")
    return bool(match.group("colon")) or any(ch.isdigit() for ch in handle) or has_cjk(match.group("cue"))


# kind -> (pattern, validator of a match or None)
_PII_PATTERNS: dict[str, tuple[re.Pattern, Callable[[re.Match], bool] | None]] = {
    "email": (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), None),
    "url": (re.compile(r"(?:https?://|www\.)[^\s，。、；]+", re.IGNORECASE), None),
    # shop.example.com, example.com.cn; the TLD list keeps "e.g." and "v1.2" out.
    "domain": (re.compile(rf"(?<![A-Za-z0-9@.-])(?:[A-Za-z0-9](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?\.)+"
                          rf"(?:{_TLDS})(?![A-Za-z0-9-])", re.IGNORECASE), None),
    # 13812345678, 138 1234 5678, 138-1234-5678, +86-13812345678, 0086 138 1234 5678
    "cn_mobile": (re.compile(r"(?<!\d)(?:(?:\+|00)?86[- ]?)?1[3-9]\d(?:[- ]?\d{4}){2}(?!\d)"), None),
    # 010-12345678, 0755-1234567, (010)12345678; a separator is required, since
    # 11 bare digits starting with 0 are too often something else.
    "cn_landline": (re.compile(r"(?<!\d)(?:0\d{2,3}-|[(（]0\d{2,3}[)）] ?)\d{7,8}(?!\d)"), None),
    # 555-123-4567, (555) 123-4567, +1 555 123 4567
    "phone": (re.compile(r"(?<!\d)(?:\+?\d{1,3}[ .-]?)?\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?!\d)"), None),
    # +44 20 7946 0958, +49-30-1234567
    "international_phone": (re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?!\d)"),
                            _international_phone),
    # Region code, birth date 18xx-20xx, sequence number, check digit. The check
    # digit is not verified, so an invented but realistic number is caught too.
    "cn_id_card": (re.compile(r"(?<!\d)[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
                              r"\d{3}[\dXx](?![\dA-Za-z])"), None),
    # 13-19 digits in groups; only numbers that pass the Luhn checksum count.
    "card_number": (re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)"), _card_number),
    # A WeChat ID (a letter, then 5-19 letters, digits, - or _) or a QQ number after a contact cue.
    "wechat_qq": (re.compile(rf"(?<![A-Za-z0-9])(?P<cue>{_CONTACT_CUES})\s*(?:号码|号|id)?\s*(?P<colon>[:：])?\s*"
                             r"(?P<handle>[a-z][-_a-z0-9]{5,19}|[1-9]\d{4,10})(?![-_a-z0-9])", re.IGNORECASE),
                  _contact_handle),
}
PII_KINDS = tuple(_PII_PATTERNS)


def find_pii(text: str) -> list[str]:
    """Return the kinds of personal data found in ``text``, in :data:`PII_KINDS` order."""
    normalised = unicodedata.normalize("NFKC", text)
    found = []
    for kind, (pattern, is_valid) in _PII_PATTERNS.items():
        for match in pattern.finditer(normalised):
            if is_valid is None or is_valid(match):
                found.append(kind)
                break
    return found


def check_pii(text: str) -> CheckResult:
    """Fail when ``text`` contains a phone number, email, URL, ID card, card number or chat handle.

    Score: the number of kinds of personal data found.
    """
    found = find_pii(text)
    if found:
        return CheckResult(False, float(len(found)), f"personal data patterns matched: {found}")
    return CheckResult(True, 0.0, "no personal data patterns")


def check_blocklist(text: str, *, phrases: tuple[str, ...] = DEFAULT_BLOCKLIST) -> CheckResult:
    """Fail when ``text`` contains a blocked phrase.

    Matching is case-insensitive after NFKC normalisation, on whole words for
    Latin phrases ("cures" does not match "secures") and as substrings for
    phrases with CJK characters.

    Score: the number of distinct blocked phrases found.
    """
    found = _blocklist_matcher(phrases).find(text)
    if found:
        return CheckResult(False, float(len(found)), f"blocked phrases: {found[:5]}")
    return CheckResult(True, 0.0, "no blocked phrase")


@functools.lru_cache(maxsize=8)
def _blocklist_matcher(phrases: tuple[str, ...]) -> TermMatcher:
    return TermMatcher(phrases)


def load_blocklist(path: str | Path) -> tuple[str, ...]:
    """Read blocked phrases from a UTF-8 text file, one phrase per line.

    Blank lines and lines whose first non-blank character is ``#`` are
    skipped. Write ``\\#`` at the start of a line for a phrase that starts
    with ``#``. The phrases replace :data:`DEFAULT_BLOCKLIST`; copy the
    defaults into the file to extend them.

    Raises
    ------
    ValueError
        If the file is missing, is not UTF-8 or contains no phrase. The
        message names the path.
    """
    path = Path(path).expanduser()
    fix = "set SHOPSYNTH_BLOCKLIST_PATH to a UTF-8 file with one phrase per line, or unset it for the defaults"
    if not path.is_file():
        raise ValueError(f"blocklist file {str(path)!r} not found; {fix}")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise ValueError(f"blocklist file {str(path)!r} is not valid UTF-8 ({exc}); {fix}") from exc
    phrases = []
    for line in lines:
        phrase = line.strip()
        if not phrase or phrase.startswith("#"):
            continue
        if phrase.startswith("\\#"):
            phrase = phrase[1:]
        if phrase not in phrases:
            phrases.append(phrase)
    if not phrases:
        raise ValueError(f"blocklist file {str(path)!r} contains no phrase, only blank or # comment lines; {fix}")
    logger.info("loaded blocklist path=%s phrases=%d", path, len(phrases))
    return tuple(phrases)
