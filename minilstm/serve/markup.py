"""Translating HTML while keeping its markup: ``format: "html"`` requests, such as Mastodon's statuses.

Two phases, so that the server can batch the prose of many requests together::

    doc = HtmlDocument.parse(markup)          # MarkupError for HTML we refuse
    doc.texts                                 # the prose to translate, as plain text
    doc.render(translations)                  # the markup with each text replaced by its translation

``html.parser.HTMLParser`` is used as a tokenizer only: every token keeps the span of the input it came from, the
spans are checked to cover the input exactly, and everything that is not translated prose is written back from
those spans, byte for byte. A prose segment is the text between block boundaries, joined across inline formatting
tags (``It is <b>very</b> good.`` is one segment, ``It is very good.``), so the model sees whole sentences.

Where the inline tags go in a translation is an approximation: each tag inside a segment sits at a character offset
of the source text; that offset is scaled to the translation's length and moved to the nearest word start (an
opening tag) or word end (a closing tag), punctuation around a word left outside. Every tag is kept, in its order,
so nesting and attributes are unchanged, but the words a tag wraps in the translation are a guess by position, not
by meaning.

Numeric character references that are not characters (``&#0;``, a surrogate such as ``&#xD800;``, beyond
U+10FFFF, a control character such as ``&#1;`` or ``&#x81;``) are refused rather than mapped to U+FFFD, as the
server refuses such characters in plain text; they are looked for anywhere in the markup, even in a comment, for
simplicity. ``&#x80;``-``&#x9F;`` that HTML maps to Windows-1252 characters (``€``, quotes, dashes) are accepted,
as is ``&#13;``. Unknown entities such as ``&bogus;`` are text, as HTML says.
"""

import bisect
import html
import re
from dataclasses import dataclass
from html.parser import HTMLParser

from ..errors import MinilstmError

MAX_DEPTH = 256

VOID_ELEMENTS = frozenset(
    "area base basefont bgsound br col embed frame hr img input keygen link meta param source track wbr".split()
)
# Their content is not markup: the tokenizer reads it as text up to the matching end tag (script and style are
# HTMLParser's own; the others are HTML's raw text and escapable raw text elements).
RAW_TEXT_ELEMENTS = frozenset("script style textarea title xmp iframe noembed noframes".split())
FOREIGN_ELEMENTS = frozenset(["svg", "math"])  # inside them, <x/> is an empty element, as in XML
# Never translated: copied as they are, content and all.
KEPT_ELEMENTS = RAW_TEXT_ELEMENTS | FOREIGN_ELEMENTS | frozenset("code pre kbd samp template".split())
KEPT_CLASSES = frozenset("mention hashtag h-card invisible ellipsis notranslate".split())
# Inline formatting: a segment runs across these tags. Any other tag ends the segment.
INLINE_ELEMENTS = frozenset(
    "a abbr b bdi bdo big cite data del dfn em font i ins label mark q s small span strike strong sub sup time tt u var"
    .split()
)
# HTML's adoption agency rebuilds these when they are closed out of order, changing the tree.
FORMATTING_ELEMENTS = frozenset("a b big code em font i nobr s small strike strong tt u".split())

HEADINGS = {f"h{level}" for level in range(1, 7)}
TABLE_PARTS = frozenset("caption colgroup tbody thead tfoot tr td th".split())
P_CLOSERS = (
    frozenset(
        "address article aside blockquote center details dialog dir div dl fieldset figcaption figure footer form "
        "header hgroup hr li dd dt main menu nav ol p pre section search summary table ul listing plaintext xmp".split()
    )
    | HEADINGS
    | TABLE_PARTS
)
# Elements whose end tag HTML lets one leave out, and the start tags that end them when they are the current element.
CLOSED_BY_START = {
    "p": P_CLOSERS,
    "li": frozenset(["li"]) | TABLE_PARTS,
    "dt": frozenset(["dt", "dd"]) | TABLE_PARTS,
    "dd": frozenset(["dt", "dd"]) | TABLE_PARTS,
    "option": frozenset(["option", "optgroup"]),
    "optgroup": frozenset(["optgroup"]),
    "rb": frozenset(["rb", "rt", "rtc", "rp"]),
    "rt": frozenset(["rb", "rt", "rtc", "rp"]),
    "rp": frozenset(["rb", "rt", "rtc", "rp"]),
    "rtc": frozenset(["rb", "rtc"]),
    "tr": frozenset(["tr", "tbody", "thead", "tfoot"]),
    "td": frozenset(["td", "th", "tr", "tbody", "thead", "tfoot"]),
    "th": frozenset(["td", "th", "tr", "tbody", "thead", "tfoot"]),
    "thead": frozenset(["tbody", "tfoot"]),
    "tbody": frozenset(["tbody", "tfoot"]),
    "tfoot": frozenset(["tbody"]),
    "colgroup": TABLE_PARTS,
    "caption": TABLE_PARTS,
    "head": frozenset(["body"]),
    "html": frozenset(),
    "body": frozenset(),
}
OPTIONAL_END = frozenset(CLOSED_BY_START)
# HTML closes an open p, li, dt or dd found deeper in the stack too (below other elements), which rebuilds the tree;
# we refuse that case. The search stops at these elements (HTML's "button scope" for p, "list item scope" for li).
SCOPE_BOUNDARIES = frozenset("applet caption html table td th marquee object template button".split())
LIST_ITEM_BOUNDARIES = SCOPE_BOUNDARIES | frozenset(
    "article aside blockquote body center details dialog dir dl fieldset figcaption figure footer form header hgroup "
    "main menu nav ol section select ul".split()
)
DEEP_CLOSE_BOUNDARIES = {
    "p": SCOPE_BOUNDARIES,
    "li": LIST_ITEM_BOUNDARIES,
    "dt": LIST_ITEM_BOUNDARIES,
    "dd": LIST_ITEM_BOUNDARIES,
}

# html.unescape's own pattern, so that a text is split into the same character references it decodes.
CHARACTER_REFERENCE = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)")
NUMERIC_REFERENCE = re.compile(r"&#(?:[xX]0*([0-9a-fA-F]+)|0*([0-9]+));?")
BAD_CHARACTER = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
ALLOWED_CONTROLS = "\t\n\r\f"
# Found in the raw text (so an entity inside a URL stays inside it): bare URLs, @user and @user@host mentions,
# e-mail addresses and #hashtags. They are copied as they are and end the segment.
KEPT_TEXT = re.compile(
    r"""(?:[a-zA-Z][a-zA-Z0-9+.-]*://|www\.)[^\s<>"]*(?:&\#?\w+;|[^\s<>"'.,;:!?)\]}])"""
    r"|(?<![\w@.+-])[\w.+-]*@\w+(?:[.-]\w+)*(?:@[\w-]+(?:\.[\w-]+)+)?"
    r"|(?<![\w&#])\#\w*[^\W\d]\w*"
)
# A word for placing tags: from its first letter or digit to its last, so that "cats," ends before the comma and
# "n'est-ce" is one word.
WORD = re.compile(r"\w+(?:\S*\w)?")
# Text that starts like a tag: what HTMLParser gives back as text when a tag or comment is cut off by the end.
UNFINISHED_TAG = re.compile(r"<[a-zA-Z/!?]")
URL_LIKE = re.compile(r"(?:[a-zA-Z][a-zA-Z0-9+.-]*://|www\.|mailto:|[@#])\S*|[\w-]+(?:\.[\w-]+)+(?:/\S*)?")


class MarkupError(MinilstmError):
    """HTML that we refuse to translate; the message is one line, says where, and suits a 400 answer."""


def _location(markup: str, offset: int) -> str:
    line = markup.count("\n", 0, offset) + 1
    column = offset - (markup.rfind("\n", 0, offset) + 1) + 1
    return f"line {line}, column {column}"


def _malformed(markup: str, offset: int, what: str, after: str = "") -> MarkupError:
    """``what`` at line L, column C ``after``: one line, whatever the markup holds."""
    return MarkupError(f"Invalid request: malformed HTML: {what} at {_location(markup, offset)}{after}")


def _shown(name: str) -> str:
    """A tag name or a character reference as quoted in a message, cut short: the markup may hold a long one."""
    return name if len(name) <= 40 else name[:40] + "..."


TEXT, START, END, OTHER = "text", "start", "end", "other"


class _Token:
    """One token and the span of the input it came from. For a start tag: where its element's content ends (the
    index of the token that closed it) and whether that token is its own end tag."""

    __slots__ = ("kind", "start", "end", "tag", "attrs", "raw_text", "content_end", "has_end_tag")

    def __init__(self, kind, start, end, tag="", attrs=(), raw_text=False):
        self.kind, self.start, self.end, self.tag, self.attrs = kind, start, end, tag, attrs
        self.raw_text = raw_text  # text inside script, style, textarea...: not markup, never prose
        self.content_end, self.has_end_tag = -1, False


class _Tokenizer(HTMLParser):
    """HTMLParser recording each token with its span, and checking the elements' nesting as the tokens come.

    HTMLParser reports a token through a handler and then advances its position with ``updatepos(i, j)``; that
    is where a token gets its span. A stretch that no handler reported (HTMLParser drops ``</>``, as HTML does)
    becomes an OTHER token, so the spans partition the input by construction; ``parse`` checks it at the end.
    The nesting is checked here, token by token, so that a refused document stops the tokenizer at once.
    """

    def __init__(self, markup: str):
        super().__init__(convert_charrefs=True)  # no separate entity tokens: text is only split at "<"
        self.markup = markup
        self.tokens: list[_Token] = []
        self.pending = None
        self.base = 0  # the offset in markup of self.rawdata[0]
        self.covered = 0
        self.stack: list[int] = []  # indices of the start tokens of the open elements
        self.open_count: dict[str, int] = {}
        self.foreign_depth = 0

    # -- the tokenizer's side

    def goahead(self, end):
        self.base = len(self.markup) - len(self.rawdata)
        super().goahead(end)

    def _report(self, kind, tag="", attrs=(), self_closing=False):
        if self.pending is not None:
            raise RuntimeError("HTMLParser reported two tokens for one span")
        self.pending = (kind, tag, attrs, self_closing, self.cdata_elem is not None)

    def handle_starttag(self, tag, attrs):
        self._report(START, tag, attrs)
        if tag in RAW_TEXT_ELEMENTS and not self.foreign_depth:
            self.set_cdata_mode(tag)

    def handle_startendtag(self, tag, attrs):
        self._report(START, tag, attrs, self_closing=True)
        if tag in RAW_TEXT_ELEMENTS and not self.foreign_depth:  # HTML ignores the "/" of <script/>
            self.set_cdata_mode(tag)

    def handle_endtag(self, tag):
        self._report(END, tag)

    def handle_data(self, data):
        self._report(TEXT)

    def handle_comment(self, data):
        self._report(OTHER)

    def handle_decl(self, decl):
        self._report(OTHER)

    def handle_pi(self, data):
        self._report(OTHER)

    def unknown_decl(self, data):
        self._report(OTHER)

    def updatepos(self, i, j):
        if i < j:
            start, end = self.base + i, self.base + j
            if start != self.covered:
                raise _malformed(self.markup, self.covered, "cannot read the markup")
            self.covered = end
            kind, tag, attrs, self_closing, raw_text = self.pending or (OTHER, "", (), False, False)
            self.pending = None
            self._add(_Token(kind, start, end, tag, attrs, raw_text), self_closing)
        return super().updatepos(i, j)

    # -- the nesting

    def _add(self, token: _Token, self_closing: bool):
        tokens = self.tokens
        if token.kind == TEXT:
            if not token.raw_text and UNFINISHED_TAG.match(self.markup, token.start):
                raise _malformed(self.markup, token.start, "unfinished tag or comment")
            previous = tokens[-1] if tokens else None
            if previous is not None and previous.kind == TEXT and previous.raw_text == token.raw_text:
                previous.end = token.end  # "a < b" comes as three pieces of text
                return
        tokens.append(token)
        if token.kind == START:
            self._open(len(tokens) - 1, self_closing)
        elif token.kind == END:
            self._close(len(tokens) - 1)

    def _describe(self, index: int) -> str:
        token = self.tokens[index]
        return f"<{_shown(token.tag)}> ({_location(self.markup, token.start)})"

    def _pop(self, closed_at: int, has_end_tag=False):
        index = self.stack.pop()
        token = self.tokens[index]
        token.content_end, token.has_end_tag = closed_at, has_end_tag
        self.open_count[token.tag] -= 1
        if token.tag in FOREIGN_ELEMENTS:
            self.foreign_depth -= 1

    def _open(self, index: int, self_closing: bool):
        tokens, stack, tag = self.tokens, self.stack, self.tokens[index].tag
        while stack and tag in CLOSED_BY_START.get(tokens[stack[-1]].tag, ()):
            self._pop(index)
        for closable, boundaries in DEEP_CLOSE_BOUNDARIES.items():
            if tag in CLOSED_BY_START[closable] and self.open_count.get(closable):
                for open_index in reversed(stack):
                    open_tag = tokens[open_index].tag
                    if open_tag == closable:
                        raise _malformed(
                            self.markup, tokens[index].start, f"<{_shown(tag)}>",
                            f" would end {self._describe(open_index)} while {self._describe(stack[-1])} is still open",
                        )
                    if open_tag in boundaries:
                        break
        if tag == "a" and self.open_count.get("a"):
            open_link = next(i for i in reversed(stack) if tokens[i].tag == "a")
            raise _malformed(self.markup, tokens[index].start, "<a>", f" is inside {self._describe(open_link)}")
        if tag in VOID_ELEMENTS or (self_closing and self.foreign_depth):
            tokens[index].content_end = index + 1
            return
        stack.append(index)
        self.open_count[tag] = self.open_count.get(tag, 0) + 1
        if tag in FOREIGN_ELEMENTS:
            self.foreign_depth += 1
        if len(stack) > MAX_DEPTH:
            raise _malformed(self.markup, tokens[index].start, f"elements nested deeper than {MAX_DEPTH}")

    def _close(self, index: int):
        tokens, stack, tag = self.tokens, self.stack, self.tokens[index].tag
        if not self.open_count.get(tag):
            raise _malformed(self.markup, tokens[index].start, f"</{_shown(tag)}>", f" closes no open <{_shown(tag)}>")
        position = len(stack) - 1
        while tokens[stack[position]].tag != tag:
            position -= 1
        for above in reversed(stack[position + 1:]):
            if tag in FORMATTING_ELEMENTS or tokens[above].tag not in OPTIONAL_END:
                raise _malformed(
                    self.markup, tokens[index].start, f"</{_shown(tag)}>",
                    f" closes {self._describe(stack[position])} while {self._describe(above)} is still open",
                )
        while len(stack) > position + 1:
            self._pop(index)
        self._pop(index, has_end_tag=True)

    def finish(self):
        """Close what HTML lets one leave open at the end; refuse the rest."""
        for index in reversed(self.stack):
            if self.tokens[index].tag not in OPTIONAL_END:
                raise _malformed(self.markup, self.tokens[index].start, f"<{_shown(self.tokens[index].tag)}>",
                                 " is never closed")
        while self.stack:
            self._pop(len(self.tokens))
        if self.pending is not None or self.covered != len(self.markup):
            raise _malformed(self.markup, self.covered, "cannot read the markup")


def _check_characters(markup: str):
    """Refuse control characters and lone surrogates, written as they are or as numeric character references."""
    bad = BAD_CHARACTER.search(markup)
    if bad:
        raise _malformed(markup, bad.start(), f"control character U+{ord(bad.group()):04X}")
    if "&#" not in markup:
        return
    for reference in NUMERIC_REFERENCE.finditer(markup):
        hex_digits, decimal_digits = reference.groups()
        digits = hex_digits or decimal_digits
        code = int(digits, 16 if hex_digits else 10) if len(digits) <= 8 else 0x110000
        decoded = html.unescape(reference.group()) if code < 0x110000 else ""
        if (
            code == 0
            or 0xD800 <= code <= 0xDFFF
            or decoded == ""
            or any(ch < " " and ch not in ALLOWED_CONTROLS or "\x7f" <= ch <= "\x9f" for ch in decoded)
        ):
            raise _malformed(markup, reference.start(), _shown(reference.group()), " is not a valid character")


def _classes(token: _Token) -> set[str]:
    for name, value in token.attrs:
        if name == "class" and value:
            return set(value.lower().split())
    return set()


def _attribute(token: _Token, wanted: str) -> str | None:
    for name, value in token.attrs:
        if name == wanted:
            return value
    return None


@dataclass
class _Segment:
    """A stretch of prose: its leading and trailing whitespace (and the tags among them) written back as they
    were, and its core, text atoms ``(decoded, raw)`` and tags ``(None, raw, is_opening, offset)``."""

    lead: str
    core: list
    trail: str
    text: str  # the core's plain text, what is sent for translation

    def raw(self) -> str:
        return self.lead + "".join(item[1] for item in self.core) + self.trail

    def render(self, translation: str) -> str:
        """An empty translation keeps the source text: where text stands can change the tree HTML builds (text in
        a table or in the head is moved), so a segment's text never disappears."""
        translation = translation.strip()
        if translation == self.text or not translation:
            return self.raw()
        return self.lead + _place_tags(self.text, translation, self.core) + self.trail


def _place_tags(source: str, translation: str, core: list) -> str:
    """The translation, escaped, with the core's tags at the source offsets scaled to its length and snapped to
    word boundaries (an approximation: see the module's docstring). Every tag is kept, in order, and an element
    that wrapped some text wraps at least one word when the translation has words left."""
    words = [word.span() for word in WORD.finditer(translation)]
    word_starts, word_ends = [start for start, _ in words], [end for _, end in words]
    scale = len(translation) / len(source)
    pieces, previous, open_tags = [], 0, []  # open_tags: (source offset, placed offset) of unclosed openings
    for item in core:
        if item[0] is not None:
            continue
        _, raw, is_opening, offset = item
        position = max(previous, _nearest(word_starts if is_opening else word_ends, offset * scale))
        if is_opening:
            open_tags.append((offset, position))
        elif open_tags:
            source_start, placed_start = open_tags.pop()
            if source_start < offset and position <= placed_start:
                later = bisect.bisect_right(word_ends, placed_start)
                position = word_ends[later] if later < len(word_ends) else position
        pieces.append(html.escape(translation[previous:position], quote=False))
        pieces.append(raw)
        previous = position
    pieces.append(html.escape(translation[previous:], quote=False))
    return "".join(pieces)


def _nearest(candidates: list[int], target: float) -> int:
    if not candidates:
        return 0
    after = bisect.bisect_left(candidates, target)
    if after == 0:
        return candidates[0]
    if after == len(candidates):
        return candidates[-1]
    before = candidates[after - 1]
    return before if target - before <= candidates[after] - target else candidates[after]


def _atoms(raw: str) -> list[tuple[str, str]]:
    """Text split into (decoded, raw) pieces: runs of plain characters and single character references."""
    atoms, done = [], 0
    for reference in CHARACTER_REFERENCE.finditer(raw):
        decoded = html.unescape(reference.group())
        if decoded == reference.group():
            continue  # not a reference (&bogus;): plain text
        if reference.start() > done:
            atoms.append((raw[done:reference.start()], raw[done:reference.start()]))
        atoms.append((decoded, reference.group()))
        done = reference.end()
    if done < len(raw):
        atoms.append((raw[done:], raw[done:]))
    return atoms


def _make_segment(items: list) -> "_Segment | str":
    """A segment from its pieces, ``("text", raw)`` and ``("tag", raw, is_opening)``; its raw text if it has no
    letter to translate (whitespace, punctuation, digits, emoji)."""
    flat = []
    for item in items:
        if item[0] == "tag":
            flat.append((None, item[1], item[2]))
        else:
            for decoded, raw in _atoms(item[1]):
                flat.extend(_split_edge_space(decoded, raw))
    if not any(item[0] is not None and any(ch.isalpha() for ch in item[0]) for item in flat):
        return "".join(item[1] for item in flat)
    solid = [k for k, item in enumerate(flat) if item[0] is not None and not item[0].isspace()]
    first, last = solid[0], solid[-1]
    core, offset = [], 0
    for item in flat[first:last + 1]:
        if item[0] is None:
            core.append((None, item[1], item[2], offset))
        else:
            core.append(item)
            offset += len(item[0])
    lead = "".join(item[1] for item in flat[:first])
    trail = "".join(item[1] for item in flat[last + 1:])
    return _Segment(lead, core, trail, "".join(item[0] for item in core if item[0] is not None))


def _split_edge_space(decoded: str, raw: str) -> list[tuple[str, str]]:
    """A run of plain text as its leading whitespace, the rest, and its trailing whitespace, so that a segment's
    outer whitespace can be told from its core. A character reference stays whole."""
    if decoded != raw or decoded.isspace():
        return [(decoded, raw)]
    start = len(decoded) - len(decoded.lstrip())
    end = len(decoded.rstrip())
    return [(piece, piece) for piece in (decoded[:start], decoded[start:end], decoded[end:]) if piece]


class HtmlDocument:
    """An HTML document (or fragment) split into raw markup, copied as it is, and prose segments to translate."""

    def __init__(self, parts: list):
        self._parts = parts  # str (raw markup) or _Segment
        self.texts: list[str] = [part.text for part in parts if isinstance(part, _Segment)]

    @classmethod
    def parse(cls, markup: str) -> "HtmlDocument":
        """Split ``markup``; raise MarkupError for HTML whose tree a translation could not keep (or that HTML itself
        would rebuild): an end tag closing nothing, elements closed out of order or never closed, nesting deeper
        than MAX_DEPTH, control characters."""
        _check_characters(markup)
        tokenizer = _Tokenizer(markup)
        tokenizer.feed(markup)
        tokenizer.close()
        tokenizer.finish()
        return cls(_segments(markup, tokenizer.tokens))

    def render(self, translations: list[str]) -> str:
        """The markup with ``texts[i]`` replaced by ``translations[i]``; a translation equal to its text gives back
        the source's bytes."""
        if len(translations) != len(self.texts):
            raise ValueError(f"expected {len(self.texts)} translations, got {len(translations)}")
        pieces, next_translation = [], iter(translations)
        for part in self._parts:
            pieces.append(part.render(next(next_translation)) if isinstance(part, _Segment) else part)
        return "".join(pieces)


def _is_kept(markup: str, tokens: list[_Token], index: int) -> bool:
    token = tokens[index]
    if token.tag in KEPT_ELEMENTS or _classes(token) & KEPT_CLASSES:
        return True
    if (_attribute(token, "translate") or "").strip().lower() == "no":
        return True
    if token.tag == "a":
        if "tag" in (_attribute(token, "rel") or "").lower().split():
            return True
        text = "".join(
            markup[inner.start:inner.end] for inner in tokens[index + 1:token.content_end] if inner.kind == TEXT
        )
        text = html.unescape(text).strip()
        return bool(text) and URL_LIKE.fullmatch(text) is not None
    return False


def _segments(markup: str, tokens: list[_Token]) -> list:
    parts, items = [], []

    def flush():
        if items:
            parts.append(_make_segment(items))
            items.clear()

    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token.kind == START and _is_kept(markup, tokens, index):
            stop = token.content_end + token.has_end_tag
            flush()
            parts.append(markup[token.start:tokens[stop - 1].end])
            index = stop
            continue
        if token.kind in (START, END) and token.tag in INLINE_ELEMENTS:
            items.append(("tag", markup[token.start:token.end], token.kind == START))
        elif token.kind == TEXT and not token.raw_text:
            done = token.start
            for kept in KEPT_TEXT.finditer(markup, token.start, token.end):
                if kept.start() > done:
                    items.append(("text", markup[done:kept.start()]))
                flush()
                parts.append(kept.group())
                done = kept.end()
            if done < token.end:
                items.append(("text", markup[done:token.end]))
        else:
            flush()
            parts.append(markup[token.start:token.end])
        index += 1
    flush()
    return parts
