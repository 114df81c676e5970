"""``minilstm.serve.markup``: HTML in, the same HTML with its prose translated out (no model: fake translators)."""

import time

import pytest

from minilstm.serve.markup import MAX_DEPTH, OPTIONAL_END, VOID_ELEMENTS, HtmlDocument, MarkupError

html5lib = pytest.importorskip("html5lib", reason="the markup tests compare trees with html5lib (pip install html5lib)")

MENTION = '<span class="h-card"><a href="https://m.social/@bob" class="u-url mention">@<span>bob</span></a></span>'
LINK = (
    '<a href="https://example.com/a" rel="nofollow noopener" target="_blank"><span class="invisible">https://</span>'
    '<span class="">example.com/a</span><span class="invisible"></span></a>'
)
HASHTAG = '<a href="https://m.social/tags/cats" class="mention hashtag" rel="tag">#<span>cats</span></a>'
STATUS = (
    f"<p>Hello {MENTION}, read {LINK} today!<br>It is <b>very</b> good. {HASHTAG}</p>"
    "<p>Second &amp; last paragraph.</p>"
)
FRENCH = {
    "Hello": "Bonjour",
    ", read": ", lis",
    "today!": "aujourd'hui !",
    "It is very good.": "C'est très bon.",
    "Second & last paragraph.": "Deuxième & dernier paragraphe.",
}


def tag_tree(markup: str) -> list[tuple]:
    """The tree html5lib builds, as a flat list of openings (tag, sorted attributes), closings and comments."""
    root = html5lib.parse(markup, namespaceHTMLElements=False)
    events, pending = [], [(root, False)]
    while pending:
        element, closing = pending.pop()
        if closing:
            events.append(("end", element.tag))
        elif not isinstance(element.tag, str):
            events.append(("comment", element.text))
        else:
            events.append(("start", element.tag, sorted(element.attrib.items())))
            pending.append((element, True))
            pending.extend((child, False) for child in reversed(list(element)))
    return events


def upper(texts):
    return [text.upper() for text in texts]


def reverse_words(texts):
    return [" ".join(reversed(text.split())) for text in texts]


def test_a_mastodon_status_keeps_its_tree_and_its_mentions_hashtags_and_links():
    doc = HtmlDocument.parse(STATUS)
    assert doc.texts == list(FRENCH)
    out = doc.render([FRENCH[text] for text in doc.texts])
    assert out == (
        f"<p>Bonjour {MENTION}, lis {LINK} aujourd'hui !<br>C'est <b>très</b> bon. {HASHTAG}</p>"
        "<p>Deuxième &amp; dernier paragraphe.</p>"
    )
    assert tag_tree(out) == tag_tree(STATUS)
    for kept in (MENTION, LINK, HASHTAG):
        assert kept in out


@pytest.mark.parametrize("translate", [upper, reverse_words, lambda texts: ["x" for _ in texts]])
def test_any_translation_keeps_the_tag_tree(translate):
    doc = HtmlDocument.parse(STATUS)
    assert tag_tree(doc.render(translate(doc.texts))) == tag_tree(STATUS)


def test_the_identity_translation_gives_back_the_input_byte_for_byte():
    markup = "<p>Caf&eacute; &#233;t&#xE9; &amp;c &bogus; &#x80;&#xFFFD; <i>fine</i></p>\n<!-- note -->"
    markup += "<p title='&amp;'>x y</p>"
    doc = HtmlDocument.parse(markup)
    assert doc.render(doc.texts) == markup


def test_inline_tags_across_a_sentence_make_one_segment():
    doc = HtmlDocument.parse('<div>It is <b>very</b> <a href="/x">good</a>, <em>isn\'t it</em>?</div>')
    assert doc.texts == ["It is very good, isn't it?"]
    out = doc.render(["C'est très bon, n'est-ce pas ?"])
    assert out == "<div>C'est <b>très</b> <a href=\"/x\">bon</a>, <em>n'est-ce pas</em> ?</div>"


def test_every_inline_tag_is_kept_even_when_the_translation_is_short():
    doc = HtmlDocument.parse("<p>one <b>two</b> <i>three</i> <u>four</u> five</p>")
    out = doc.render(["a"])
    assert out.count("<b>") == out.count("</b>") == out.count("<i>") == out.count("<u>") == 1
    assert tag_tree(out) == tag_tree("<p>one <b>two</b> <i>three</i> <u>four</u> five</p>")


def test_blocks_line_breaks_and_kept_elements_end_segments():
    markup = "<p>One<br>two</p><ul><li>three<li>four</ul>five <code>x = 1</code> six <span translate='no'>Bob</span>"
    doc = HtmlDocument.parse(markup)
    assert doc.texts == ["One", "two", "three", "four", "five", "six"]
    out = doc.render(upper(doc.texts))
    assert out == markup.replace("One", "ONE").replace("two", "TWO").replace("three", "THREE").replace(
        "four", "FOUR").replace("five", "FIVE").replace("six", "SIX")


def test_bare_urls_mentions_and_hashtags_in_text_are_kept():
    markup = "see https://example.com/a?b=1&amp;c=2 and ask @bob@m.social or @alice about #cats now"
    doc = HtmlDocument.parse(markup)
    assert doc.texts == ["see", "and ask", "or", "about", "now"]
    out = doc.render(upper(doc.texts))
    assert out == "SEE https://example.com/a?b=1&amp;c=2 AND ASK @bob@m.social OR @alice ABOUT #cats NOW"


def test_leading_and_trailing_whitespace_stay_as_in_the_source():
    doc = HtmlDocument.parse("<p>\n  Hello <b>there</b>&nbsp;\n</p>")
    assert doc.texts == ["Hello there"]
    assert doc.render(["Salut toi"]) == "<p>\n  Salut <b>toi</b>&nbsp;\n</p>"


def test_an_empty_translation_keeps_the_source_text():
    """Text can decide where HTML puts things (text in a table is moved out of it), so it never disappears."""
    markup = "<table><tr><td>a</td></tr>Stray text<tr><td>b</td></tr></table>"
    doc = HtmlDocument.parse(markup)
    assert doc.render(["" for _ in doc.texts]) == markup


def test_translations_are_escaped():
    doc = HtmlDocument.parse("<p>a &lt;b&gt; c</p>")
    assert doc.texts == ["a <b> c"]
    assert doc.render(["<i> & \"q\""]) == '<p>&lt;i&gt; &amp; "q"</p>'


@pytest.mark.parametrize(
    "markup",
    [
        "",
        "   \n",
        "<p>123 — 4.5!</p>",
        f"<p>{MENTION} {HASHTAG} {LINK}</p>",
        "<pre>Some code\n  here</pre><code>more</code><script>var a = '<b>';</script><style>p{}</style>",
        "<!DOCTYPE html><!-- a comment --><p class=notranslate>Keep me</p><textarea>Leave <b> it</textarea>",
        "https://example.com @bob #tag 😀",
    ],
)
def test_documents_with_nothing_to_translate_come_back_unchanged(markup):
    doc = HtmlDocument.parse(markup)
    assert doc.texts == []
    assert doc.render([]) == markup


@pytest.mark.parametrize(
    "markup",
    ["Just plain text.", "Two lines\nof text & more.", "I <3 you", "a < b and c > d", "&bogus; is text"],
)
def test_plain_text_without_tags(markup):
    doc = HtmlDocument.parse(markup)
    assert len(doc.texts) == 1
    assert doc.render(doc.texts) == markup
    assert tag_tree(doc.render(upper(doc.texts))) == tag_tree(markup)


@pytest.mark.parametrize(
    "markup",
    [
        "<p>a<p>b",
        "<ul><li>a<li>b</ul>",
        "<dl><dt>a<dd>b</dl>",
        "<table><tr><td>a<td>b<tr><th>c</table>",
        "<select><option>a<option>b</select>",
        "<div><p>a</div>",
        "<!DOCTYPE html><html><head><title>T</title></head><body><p>Hi there</p></body></html>",
        "<svg viewBox='0 0 1 1'><path d='M0'/></svg> text",
        "</>Hello",
    ],
)
def test_html_optional_end_tags_are_accepted(markup):
    doc = HtmlDocument.parse(markup)
    assert doc.render(doc.texts) == markup
    assert tag_tree(doc.render(upper(doc.texts))) == tag_tree(markup)


@pytest.mark.parametrize(
    ("markup", "message"),
    [
        ("<p>Hello <b>world</p>",
         "</p> at line 1, column 18 closes <p> (line 1, column 1) while <b> (line 1, column 10) is still open"),
        ("<div>a</div></div>", "</div> at line 1, column 13 closes no open <div>"),
        ("<p>a</p>\n<b>x", "<b> at line 2, column 1 is never closed"),
        ("x &#0; y", "&#0; at line 1, column 3 is not a valid character"),
        ("x &#xD800; y", "&#xD800; at line 1, column 3 is not a valid character"),
        ("&#1;", "&#1; at line 1, column 1 is not a valid character"),
        ("&#x110000;", "&#x110000; at line 1, column 1 is not a valid character"),
        ("&#x81;", "&#x81; at line 1, column 1 is not a valid character"),
        ("&#" + "9" * 5000 + ";", "&#" + "9" * 38 + "... at line 1, column 1 is not a valid character"),
        ("a\x00b", "control character U+0000 at line 1, column 2"),
        ("<b><i>x</b></i>", "</b> at line 1, column 8 closes <b> (line 1, column 1) while <i> (line 1, column 4)"),
        ("<b><p>x</b>", "</b> at line 1, column 8 closes <b> (line 1, column 1) while <p> (line 1, column 4)"),
        ("<p>a <b>b<div>c</div></b></p>", "<div> at line 1, column 10 would end <p> (line 1, column 1) while <b>"),
        ("<a href=x>a <a href=y>b</a></a>", "<a> at line 1, column 13 is inside <a> (line 1, column 1)"),
        ("<br></br>", "</br> at line 1, column 5 closes no open <br>"),
        ("text <b", "unfinished tag or comment at line 1, column 6"),
        ("text <!-- never ends", "unfinished tag or comment at line 1, column 6"),
        ("<p>ok</p><script>x = 1", "<script> at line 1, column 10 is never closed"),
        ("<span/>x", "<span> at line 1, column 1 is never closed"),
        ("</a{at}{0}%s>", "</a{at}{0}%s> at line 1, column 1 closes no open <a{at}{0}%s>"),
        ("<" + "x" * 100 + ">", "<" + "x" * 40 + "...> at line 1, column 1 is never closed"),
    ],
)
def test_bad_html_is_refused_with_one_line_that_says_where(markup, message):
    with pytest.raises(MarkupError) as caught:
        HtmlDocument.parse(markup)
    text = str(caught.value)
    assert text.startswith("Invalid request: malformed HTML: ")
    assert message in text
    assert "\n" not in text


@pytest.mark.parametrize("closed", [False, True])
def test_ten_megabytes_of_nested_divs_are_refused_quickly(closed):
    count = 10_000_000 // len("<div>")
    markup = "<div>" * count + ("</div>" * count if closed else "")
    started = time.perf_counter()
    with pytest.raises(MarkupError, match=f"nested deeper than {MAX_DEPTH} at line 1, column {MAX_DEPTH * 5 + 1}"):
        HtmlDocument.parse(markup)
    assert time.perf_counter() - started < 1.0


def test_a_long_flat_document_is_read_in_linear_time():
    markup = "<p>It is <b>very</b> good.</p>\n" * 10_000  # 310 kB
    started = time.perf_counter()
    doc = HtmlDocument.parse(markup)
    rendered = doc.render(upper(doc.texts))
    assert time.perf_counter() - started < 5.0
    assert len(doc.texts) == 10_000 and rendered.count("<b>VERY</b>") == 10_000


def test_render_wants_one_translation_per_text():
    with pytest.raises(ValueError, match="expected 1 translations, got 0"):
        HtmlDocument.parse("<p>Hello</p>").render([])


# -- properties over random well-formed markup

hypothesis = pytest.importorskip("hypothesis", reason="the property tests need hypothesis (pip install '.[test]')")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

WORDS = [
    "Hello", "world", "it", "is", "very", "good", "caf&eacute;", "&amp;", "&lt;3", "&#233;t&#xE9;", "&bogus;",
    "1984", "!", ",", ".", "?", "😀", "@bob@m.social", "@alice", "#cats", "https://example.com/a?b=1&amp;c=2",
]
SPACES = [" ", " ", " ", "", "\n", "  ", "&nbsp;"]

text = st.lists(st.tuples(st.sampled_from(WORDS), st.sampled_from(SPACES)), max_size=6).map(
    lambda pairs: "".join(word + space for word, space in pairs)
)
ATTRIBUTES = ["", ' class="x"', ' title="a &amp; b"', " lang=en", ' translate="no"', ' class="notranslate"']
INLINE = ["b", "i", "em", "strong", "span", "u", "small", "mark", "sub", "sup", "q", "cite", "abbr"]


def _wrap(tag, attributes, inner):
    return f"<{tag}{attributes}>{inner}</{tag}>"


def _phrasing(inside_link: bool):
    """Inline content; a link holds no link (HTML would move a nested one out)."""
    leaves = st.one_of(text, st.just("<br>"), st.builds(lambda inner: f"<code>{inner}</code>", text))
    if not inside_link:
        leaves = st.one_of(leaves, st.sampled_from([MENTION, HASHTAG, LINK]))

    def extend(children):
        wrapped = st.builds(_wrap, st.sampled_from(INLINE), st.sampled_from(ATTRIBUTES), children)
        if not inside_link:
            wrapped = st.one_of(wrapped, st.builds(lambda inner: f'<a href="/x">{inner}</a>', _phrasing(True)))
        return st.lists(st.one_of(wrapped, children), max_size=4).map("".join)

    return st.recursive(leaves, extend, max_leaves=12)


phrasing = _phrasing(False)
flow = st.recursive(
    st.one_of(phrasing, st.builds(lambda inner: f"<p>{inner}</p>", phrasing)),
    lambda children: st.one_of(
        st.builds(_wrap, st.sampled_from(["div", "blockquote", "section", "h2"]), st.sampled_from(ATTRIBUTES),
                  st.lists(children, max_size=3).map("".join)),
        st.builds(lambda items: "<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>",
                  st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda inner: f"<pre>{inner}</pre>", text),
        st.builds(lambda inner: f"<!--{inner}-->", st.sampled_from(["", " note ", "<b>"])),
    ),
    max_leaves=10,
)
document = st.lists(flow, min_size=1, max_size=4).map("".join)


@settings(max_examples=300, deadline=None)
@given(document)
def test_the_identity_translation_renders_random_markup_unchanged(markup):
    doc = HtmlDocument.parse(markup)
    assert doc.render(doc.texts) == markup


@settings(max_examples=300, deadline=None)
@given(document, st.sampled_from([upper, reverse_words, lambda texts: [t + " " + t for t in texts]]))
def test_other_translations_keep_the_tag_tree_of_random_markup(markup, translate):
    doc = HtmlDocument.parse(markup)
    assert tag_tree(doc.render(translate(doc.texts))) == tag_tree(markup)


ANY_TAGS = (
    "p b i em span a div li ul ol dl dt dd table tbody tr td th caption select option optgroup code pre h1 blockquote "
    "form button font nobr u s ruby rt rp section label svg math noscript object marquee address head body html title "
    "textarea template br hr img input col colgroup".split()
)
soup_leaf = st.sampled_from(["", "Hello world", " ", "x &amp; y", "\n", "la la", "@bob", "#tag"])
soup_tree = st.recursive(
    soup_leaf,
    lambda children: st.tuples(st.sampled_from(ANY_TAGS), st.lists(children, max_size=3), st.booleans()),
    max_leaves=10,
)


def _soup(node) -> str:
    """A tree of any tags, any nesting, its optional end tags sometimes left out: markup HTML may rebuild."""
    if isinstance(node, str):
        return node
    tag, children, leave_end_out = node
    if tag in VOID_ELEMENTS:
        return f"<{tag}>"
    end = "" if leave_end_out and tag in OPTIONAL_END else f"</{tag}>"
    return f"<{tag}>{''.join(_soup(child) for child in children)}{end}"


@settings(max_examples=300, deadline=None)
@given(st.lists(soup_tree, max_size=3).map(lambda trees: "".join(_soup(tree) for tree in trees)))
def test_markup_that_is_not_refused_keeps_its_tree_whatever_the_nesting(markup):
    try:
        doc = HtmlDocument.parse(markup)
    except MarkupError:
        return
    assert doc.render(doc.texts) == markup
    for translations in ([text.upper() + " and more" for text in doc.texts], ["" for _ in doc.texts]):
        assert tag_tree(doc.render(translations)) == tag_tree(markup)
