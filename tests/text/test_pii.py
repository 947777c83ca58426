"""PII scrubbing: personal data replaced, ordinary numbers and words kept."""

from __future__ import annotations

import pytest

from llm4rec.text import scrub_pii


@pytest.mark.parametrize(("text", "expected"), [
    ("call +1 (555) 123-4567", "call [PHONE]"),
    ("(555) 123-4567 after 6pm", "[PHONE] after 6pm"),
    ("ring 020 7946 0958 now", "ring [PHONE] now"),
    ("+44 20 7946 0958", "[PHONE]"),
    ("1-800-555-1234", "[PHONE]"),
    ("555.123.4567", "[PHONE]"),
    ("tel. 06 12 34 56 78", "tel. [PHONE]"),
    ("john.doe@example.com", "[EMAIL]"),
    ("write to a_b+c@sub.domain.co.uk.", "write to [EMAIL]."),
    ("https://x.com/a?id=42&u=jo", "[URL]"),
    ("see www.shop.com/p?ref=mail&uid=9 today", "see [URL] today"),
    ("account 123456789", "account [NUMBER]"),
    ("UPC: 700580458542", "UPC: [NUMBER]"),
    ("card 4111 1111 1111 1111", "card [NUMBER]"),
    ("mail me at jo@x.org or call 555-123-4567", "mail me at [EMAIL] or call [PHONE]"),
])
def test_personal_data_is_replaced(text, expected):
    assert scrub_pii(text) == expected


@pytest.mark.parametrize("text", [
    "Apollo 13 (1995)", "iPhone 12", "Blade Runner 2049", "Ocean's 11", "SPF 50, 3.4 oz", "Size 10 12 14 16",
    "World War II 1939-1945", "released 2020-01-15", "1995 2001 2003", "Chanel No. 5 Eau de Parfum 100 ml",
    "Translucent 7586 0.26 oz (7.5 g)", "Whitmor 6187-2419 Dryer Balls", "SPF 20 83221 Porcelain", "zip 85711",
    "v1.2.3", "https://example.com/plain/page", "C++ @ home", "Toy Story (1995). Genres: Animation Comedy",
])
def test_ordinary_text_survives(text):
    assert scrub_pii(text) == text


def test_lists_keep_order_and_length():
    texts = ["a@b.co", "Heat (1995)", "", "call 555 123 4567"]
    assert scrub_pii(texts) == ["[EMAIL]", "Heat (1995)", "", "call [PHONE]"]
    assert scrub_pii(iter(texts)) == scrub_pii(texts)
