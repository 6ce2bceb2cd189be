"""Unit and property tests of roammail.core.posixre: POSIX ERE as glibc compiles it.

The tables here are also run against glibc's own regcomp/regexec in
tests/compat/test_c_matching.py, so every row states glibc's behaviour
(except GLIBC_DIFFERENCES, our deliberate departures).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roammail.core.posixre import DUP_MAX, compile_ere, translate_ere


def matches(pattern: str, text: str) -> bool:
    return compile_ere(pattern).search(text) is not None


# (pattern, text, does it match somewhere), as glibc's
# regcomp(REG_EXTENDED|REG_ICASE|REG_NOSUB|REG_NEWLINE) in the C locale.
MATCH_CASES: list[tuple[str, str, bool]] = [
    # the 12 classes (ASCII members; upper and lower mean alpha when case is ignored)
    ("[[:alpha:]]", "1a", True),
    ("^[[:alpha:]]+$", "abc1", False),
    ("^[[:digit:]]+$", "0123456789", True),
    ("[[:digit:]]", "abc", False),
    ("[[:alnum:]]", "-_.", False),
    ("^[[:alnum:]]+$", "aZ9", True),
    ("[[:upper:]]", "a", True),
    ("[[:lower:]]", "A", True),
    ("[^[:lower:]]", "aB", False),
    ("[^[:upper:]]", "a1", True),
    ("[[:space:]]", "a b", True),
    ("[[:space:]]", "ab", False),
    ("[[:blank:]]", "a\tb", True),
    ("x[[:blank:]]y", "x\ny", False),
    ("[[:punct:]]", "abc 123", False),
    ("[[:punct:]]", "a!", True),
    ("[[:print:]]", "\x01\x02", False),
    ("[[:print:]]", " ", True),
    ("[[:graph:]]", " \t", False),
    ("[[:cntrl:]]", "a\x7f", True),
    ("^[[:xdigit:]]+$", "09afAF", True),
    ("^[[:xdigit:]]+$", "g", False),
    ("^[[:alpha:][:digit:]]+$", "a1b2", True),
    # bracket expressions
    ("[]a]", "]", True),
    ("[]a]", "b", False),
    ("[^]a]", "]a", False),
    ("[^]a]", "b", True),
    ("[a-]", "-", True),
    ("[-a]", "-", True),
    ("[%--]", "+", True),
    ("[!--]", ",", True),
    ("[a-b-]", "-", True),
    ("[\\]", "\\", True),
    ("[\\n]", "n", True),
    ("[\\n]", "\\", True),
    ("[\\n]", "\n", False),
    ("[[.-.]]", "-", True),
    ("[[.].]]", "]", True),
    ("[[. .]]", " ", True),
    ("[[=a=]]", "A", True),
    ("[[.a.]-c]", "b", True),
    ("[a-c]", "B", True),
    ("[^a-c]", "bB", False),
    ("[[]", "[", True),
    ("[^^]", "^", False),
    ("[a^]", "^", True),
    ("a[^x]b", "a\nb", False),
    # ranges are taken between upper-cased ends
    ("[A-z]", "_", False),
    ("[A-z]", "q", True),
    ("[_-~]", "a", False),
    ("[_-~]", "A", False),
    ("[_-~]", "~", True),
    ("[0-z]", "@", True),
    # anchors: ^ and $ at every line, \` and \' at the ends of the text
    ("^To:", "From: a\nTo: b", True),
    ("^To:", "X-To: b", False),
    ("b$", "To: b\nFrom: c", True),
    ("\\`To:", "From: a\nTo: b", False),
    ("\\`From:", "From: a\nTo: b", True),
    ("c\\'", "From: a\nTo: c", True),
    ("a\\'", "From: a\nTo: c", False),
    ("x^", "x^", False),
    ("a$b", "a$b", False),
    ("(^a)", "a", True),
    ("b(^a)", "ba", False),
    ("^(To|Cc):", "Cc: x", True),
    # case: ASCII letters only
    ("^to:", "TO: x", True),
    ("WORK", "at work", True),
    ("\u00e9", "\u00c9", False),
    ("\u00e9", "\u00e9", True),
    # intervals and repetition
    ("^a{2}$", "aa", True),
    ("^a{2}$", "aaa", False),
    ("^a{2,}$", "aaaa", True),
    ("^a{,2}$", "aaa", False),
    ("^a{,2}b$", "b", True),
    ("^a{,}b$", "aaab", True),
    ("^a{1,2}b$", "ab", True),
    ("^a{01}$", "a", True),
    ("^(ab){2}$", "abab", True),
    ("^a**$", "aaa", True),
    ("^a+*$", "", True),
    ("^a{1}{2}$", "aa", True),
    ("^a{1}{2}$", "a", False),
    ("^a?{2}$", "", True),
    ("^a{1\\,2}$", "aa", True),
    ("^x{0}$", "", True),
    ("^a+?$", "", True),
    ("^a??$", "aa", False),
    ("^a++$", "aa", True),
    ("^a{2}*$", "aaa", False),
    ("^a{2}*$", "aaaa", True),
    ("^a*{2}$", "aaa", True),
    ("^(ab)+?$", "abab", True),
    ("a*", "", True),
    # alternation, groups
    ("^(To|Cc):.*@work", "Cc: x@work", True),
    ("a||b", "zzz", True),
    ("|a", "zzz", True),
    ("^(a|)$", "", True),
    ("^()$", "", True),
    ("^()*$", "", True),
    ("^(a|b)+$", "abba", True),
    # characters that are literal in ERE
    ("a)", "a)", True),
    (")", "()", True),
    ("a}", "a}", True),
    ("}", "}", True),
    ("]", "]", True),
    ("a.b", "a.b", True),
    ("a\\.b", "axb", False),
    ("\\(", "(", True),
    ("\\{", "{", True),
    ("\\}", "}", True),
    ("x\\|y", "x|y", True),
    ("x\\+", "x+", True),
    ("\\$", "$", True),
    ("\\^", "^", True),
    ("\\N", "n", True),
    ("\\%", "%", True),
    ("a\\0", "a0", True),
    # . and [^...] stop at a newline; \s, \W and classes holding it do not
    ("a.b", "a\nb", False),
    ("a.b", "a\tb", True),
    ("a\\sb", "a\nb", True),
    ("a\\Wb", "a\nb", True),
    ("a[[:space:]]b", "a\nb", True),
    ("a\nb", "a\nb", True),
    # GNU operators
    ("\\w", "_", True),
    ("^\\w+$", "a_1", True),
    ("\\w", "-.", False),
    ("\\W", "abc", False),
    ("\\s", "ab", False),
    ("\\S", " \t", False),
    ("\\bwork\\b", "at work.", True),
    ("\\bwork\\b", "homework", False),
    ("\\Bwork", "homework", True),
    ("\\<work", "homework", False),
    ("\\<work", "a work", True),
    ("work\\>", "workers", False),
    ("work\\>", "work.", True),
    ("\\B", "", True),
    ("\\b", "", False),
    # back-references
    ("^(a|b)\\1$", "aa", True),
    ("^(a|b)\\1$", "ab", False),
    ("^(a)\\1$", "aA", True),
    ("^From: ([a-z]+) <\\1@", "From: bob <bob@example.org>", True),
    ("^From: ([a-z]+) <\\1@", "From: bob <alice@example.org>", False),
    ("((a)|b)\\2", "aa", True),
    ("(a)(b|\\1)", "aa", True),
    ("(a){0}\\1", "a", False),
    # empty pattern
    ("", "", True),
    ("", "anything", True),
]

# Patterns glibc's regcomp refuses, with the reason we give.
INVALID_CASES: list[tuple[str, str]] = [
    ("(a", "unmatched ("),
    ("((a)", "unmatched ("),
    ("[a", "unmatched ["),
    ("[]", "unmatched ["),
    ("[^]", "unmatched ["),
    ("[[:alpha:]", "unmatched ["),
    ("[[:]", "unmatched ["),
    ("[[.a", "unmatched ["),
    ("[[:" + "a" * 32 + ":]]", "unmatched ["),
    ("[[:foo:]]", "invalid character class"),
    ("[[:ALPHA:]]", "invalid character class"),
    ("[[::]]", "invalid character class"),
    ("[[.ab.]]", "invalid collation"),
    ("[[..]]", "invalid collation"),
    ("[[.hyphen.]]", "invalid collation"),
    ("[[=ab=]]", "invalid collation"),
    ("[z-a]", "invalid range end"),
    ("[Z-a]", "invalid range end"),
    ("[]-a]", "invalid range end"),
    ("[\\-a]", "invalid range end"),
    ("[a-c-e]", "invalid range end"),
    ("[a--]", "invalid range end"),
    ("[[:alpha:]-z]", "invalid range end"),
    ("[a-[:alpha:]]", "invalid range end"),
    ("[[=a=]-c]", "invalid range end"),
    ("\\", "trailing backslash"),
    ("a\\", "trailing backslash"),
    ("*a", "nothing to repeat"),
    ("+", "nothing to repeat"),
    ("?", "nothing to repeat"),
    ("a|*b", "nothing to repeat"),
    ("(*a)", "nothing to repeat"),
    ("^*", "nothing to repeat"),
    ("$?", "nothing to repeat"),
    ("\\<+", "nothing to repeat"),
    ("\\b*", "nothing to repeat"),
    ("\\`{2}", "nothing to repeat"),
    ("{1}", "nothing to repeat"),
    ("{", "nothing to repeat"),
    ("a{", "unmatched {"),
    ("a{1", "unmatched {"),
    ("a{1,2", "unmatched {"),
    ("a{,", "unmatched {"),
    ("a{1\\", "unmatched {"),
    ("a{x}", "invalid interval"),
    ("a{}", "invalid interval"),
    ("a{ 1}", "invalid interval"),
    ("a{2,1}", "invalid interval"),
    ("a{1,2,3}", "invalid interval"),
    ("a{1\\}", "unmatched {"),
    (f"a{{{DUP_MAX + 1}}}", "interval count over"),
    ("a{1,99999999999}", "interval count over"),
    ("\\1", "invalid back reference"),
    ("(a)\\2", "invalid back reference"),
    ("(a\\1)", "invalid back reference"),
    ("(a)|b\\1", "invalid back reference"),
    ("(a|b\\1)", "invalid back reference"),
]

# Where we depart from glibc on purpose: (pattern, text, ours).  glibc
# compares an escaped lower-case letter with the upper-cased text, so it
# never matches; we take it for the letter, ignoring case like the rest.
GLIBC_DIFFERENCES: list[tuple[str, str, bool]] = [
    ("\\d", "d", True),
    ("\\d", "D", True),
    ("\\d", "5", False),
    ("^Subject: x\\n", "Subject: xN", True),
]


@pytest.mark.parametrize(("pattern", "text", "expected"), MATCH_CASES + GLIBC_DIFFERENCES)
def test_matches_like_glibc(pattern: str, text: str, expected: bool) -> None:
    assert matches(pattern, text) is expected, translate_ere(pattern)


@pytest.mark.parametrize(("pattern", "reason"), INVALID_CASES)
def test_invalid_patterns_are_refused_with_a_reason(pattern: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        compile_ere(pattern)


def test_the_largest_interval_is_accepted() -> None:
    assert matches(f"^a{{{DUP_MAX}}}$", "a" * DUP_MAX)
    assert not matches(f"^a{{{DUP_MAX}}}$", "a" * (DUP_MAX - 1))


def test_compiled_with_multiline_and_ascii_ignorecase() -> None:
    regex = compile_ere("a")
    assert regex.flags & re.IGNORECASE
    assert regex.flags & re.MULTILINE
    assert regex.flags & re.ASCII
    assert not regex.flags & re.DOTALL


def test_back_reference_next_to_a_digit_is_group_one() -> None:
    # glibc knows \1 to \9 only: "\10" is group 1, then a literal 0.
    pattern = "(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)\\10"
    assert matches(pattern, "abcdefghija0")
    assert not matches(pattern, "abcdefghijj")


def test_deep_nesting_is_refused_not_a_crash() -> None:
    with pytest.raises(ValueError, match="nested too deeply"):
        compile_ere("(" * 5000 + ")" * 5000)
    with pytest.raises(ValueError, match="nested too deeply"):
        compile_ere("a" + "{1}" * 5000)
    assert matches("(" * 199 + "a" + ")" * 199, "a")


def test_stacked_stars_do_not_nest() -> None:
    assert translate_ere("a" + "*" * 5000) == "a*"
    assert translate_ere("a+?") == "a*"
    assert translate_ere("a??") == "a?"
    assert translate_ere("a{2}*") == "(?:a{2})*"


def test_non_ascii_is_matched_by_character() -> None:
    assert matches("^Subject: caf.$", "Subject: caf\u00e9")
    assert matches("[\u00e0-\u00ff]", "d\u00e9j\u00e0")
    assert matches("^To: J\u00f6rg", "TO: J\u00f6rg <j@example.org>")
    # bytes that were not UTF-8, kept as lone surrogates, are characters too
    assert matches("^a.b$", "a\udcffb")


# --- properties ---------------------------------------------------------------

ERE_PIECES = list("ab^$.*+?{}()[]|\\-,:=0129%_ \n") + [
    "[:alpha:]", "[:lower:]", "[:space:]", "[:nope:]", "[.a.]", "[=b=]", "[.",
    "\\w", "\\W", "\\s", "\\S", "\\<", "\\>", "\\b", "\\B", "\\`", "\\'",
    "\\1", "\\2", "{2}", "{1,2}", "{,1}", "{0}", "[^", "\u00e9", "\udcff",
]  # fmt: skip


@settings(max_examples=500)
@given(st.text())
def test_arbitrary_text_compiles_or_raises_value_error(pattern: str) -> None:
    try:
        regex = compile_ere(pattern)
    except ValueError:
        return
    regex.search("To: someone@example.org\nSubject: x")


@settings(max_examples=1000)
@given(st.lists(st.sampled_from(ERE_PIECES), max_size=20).map("".join))
def test_ere_like_text_compiles_or_raises_value_error(pattern: str) -> None:
    try:
        regex = compile_ere(pattern)
    except ValueError as e:
        assert str(e)
        return
    regex.search("aB_ \n-]^[,{}0129:=~\\.%\u00e9")


def ere_literal(text: str) -> str:
    """An ERE matching text literally: specials in brackets, letters and digits bare."""
    out = []
    for c in text:
        if (c.isascii() and c.isalnum()) or c in " \n:@<>\"'/,;=!#%&~`_-":
            out.append(c)
        elif c == "^":
            out.append("\\^")
        else:
            out.append(f"[{c}]")
    return "".join(out)


def ascii_swapcase(text: str) -> str:
    return "".join(c.swapcase() if c.isascii() else c for c in text)


@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_a_literal_matches_itself_ignoring_ascii_case(text: str) -> None:
    pattern = "\\`" + ere_literal(text) + "\\'"
    assert matches(pattern, text)
    assert matches(pattern, ascii_swapcase(text))


@given(st.text(st.characters(blacklist_characters="\n"), max_size=30))
def test_dot_star_matches_any_single_line(text: str) -> None:
    assert matches("^.*$", text)
    assert matches("\\`.*\\'", text)
    assert not matches("\\`.*\\'", text + "\n" + text)
