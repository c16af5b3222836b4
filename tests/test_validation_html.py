"""The HTML page of a validation report: order, escaping, offline pictures, status, edge cases."""

from __future__ import annotations

import base64
import html
import re
from typing import Any

import pytest

from audioflow.validation_html import MAX_ROWS, render_html

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HTML_LABEL = "<b>x</b>"


def fact(path: str, label: str, **kw: Any) -> dict[str, Any]:
    """One decoded file's facts (a quiet mono 16 kHz second unless overridden)."""
    row = {
        "path": path, "label": label, "readable": True, "error": "", "sample_rate": 16000, "channels": 1,
        "frames": 16000, "duration_s": 1.0, "finite": True, "rms_dbfs": -24.0, "peak": 0.5,
        "clipped_fraction": 0.0, "sha256": path, "group": "", "split_unit": "ignored",
    }  # fmt: skip
    row.update(kw)
    return row


def unreadable(path: str, label: str) -> dict[str, Any]:
    empty = dict.fromkeys(["sample_rate", "channels", "frames", "duration_s", "finite", "rms_dbfs", "peak",
                           "clipped_fraction"])  # fmt: skip
    return {**fact(path, label), **empty, "readable": False, "error": "not a RIFF file & <broken>", "sha256": ""}


def make_report(
    facts: list[dict[str, Any]],
    problems: list[dict[str, Any]] = (),
    *,
    ok: bool = True,
    policy: str = "fail",
    quarantined: list[str] = (),
    **summary: Any,
) -> dict[str, Any]:
    """A report dict shaped like ``ValidationReport.to_dict()``, counts derived from its parts."""
    problems, quarantined = list(problems), list(quarantined)
    labels = sorted({f["label"] for f in facts})
    bad = {p["path"] for p in problems if p["severity"] == "error"} | set(quarantined)
    errors = [p for p in problems if p["severity"] == "error"]
    warns = [p for p in problems if p["severity"] == "warning"]
    base = {
        "root": "/data/<root> & co",
        "n_files": len(facts),
        "n_readable": sum(bool(f["readable"]) for f in facts),
        "n_errors": len(errors),
        "n_warnings": len(warns),
        "n_error_files": len({p["path"] for p in errors}),
        "n_warning_files": len({p["path"] for p in warns}),
        "n_quarantined": len(quarantined),
        "n_used": len(facts) - len(quarantined),
        "per_label": {
            lb: {
                "listed": sum(f["label"] == lb for f in facts),
                "usable": sum(f["label"] == lb and f["path"] not in bad for f in facts),
            }
            for lb in labels
        },
        "expectations": {
            "readable": {"success": True, "unexpected_count": 0, "element_count": len(facts)},
            "silence": {"success": False, "unexpected_count": 1, "element_count": None},
        },
        "gx_success": ok,
        "notes": ["group column ignored: <none> given"],
        "severities": {"readable": "error", "silence": "warning"},
    }
    base.update(summary)
    return {"ok": ok, "policy": policy, "summary": base, "problems": problems, "quarantined": quarantined,
            "facts": facts}  # fmt: skip


def problem(path: str, check: str, severity: str, reason: str) -> dict[str, str]:
    return {"path": path, "check": check, "severity": severity, "reason": reason}


@pytest.fixture(scope="module")
def mixed() -> dict[str, Any]:
    """Three labels (one with HTML in it), a silent, an unreadable, a clipped and a NaN file."""
    facts = [
        fact("dog/1.wav", "dog", duration_s=4.8, rms_dbfs=-20.5),
        fact("dog/2.wav", "dog", duration_s=5.0, sample_rate=44100, channels=2),
        fact("cat/1.wav", "cat", rms_dbfs=-200.0, peak=0.0),
        fact("cat/2.wav", "cat", peak=1.0, clipped_fraction=0.125),
        fact("cat/3.wav", "cat", duration_s=float("nan"), rms_dbfs=float("nan")),
        unreadable("x/<i>bad</i>.wav", HTML_LABEL),
        fact("x/good.wav", HTML_LABEL),
    ]
    problems = [
        problem("cat/1.wav", "silence", "warning", "silent: every sample is zero"),
        problem("x/<i>bad</i>.wav", "readable", "error", "not a RIFF file & <broken>"),
        problem("<dataset>", "min_per_class", "error", "label '<b>x</b>' has 1 usable recording(s)"),
        problem("manifest.csv:12", "label_allowed", "error", 'label "a<b" not in allowed set'),
    ]
    return make_report(facts, problems, ok=False)


@pytest.fixture(scope="module")
def mixed_page(mixed: dict[str, Any]) -> str:
    return render_html(mixed)


def images(page: str) -> list[bytes]:
    return [base64.b64decode(b, validate=True) for b in re.findall(r"src='data:image/png;base64,([^']*)'", page)]


def banner(page: str) -> str:
    return html.unescape(re.search(r"<div class='banner (\w+)' id='status'>([^<]*)</div>", page).group(2))


def test_errors_come_first_then_warnings_then_classes(mixed_page: str) -> None:
    i_err, i_warn, i_cls = (mixed_page.index(f"<h2 id='{s}'>") for s in ("errors", "warnings", "classes"))
    assert i_err < i_warn < i_cls < mixed_page.index("<h2 id='pictures'>") < mixed_page.index("<h2 id='notes'>")
    errors = mixed_page[i_err:i_warn]
    assert errors.index(html.escape("<dataset>")) < errors.index("manifest.csv:12")
    assert "silent: every sample is zero" in mixed_page[i_warn:i_cls]
    assert "silent: every sample is zero" not in errors


def test_user_text_is_escaped(mixed: dict[str, Any], mixed_page: str) -> None:
    texts = [p["path"] for p in mixed["problems"]] + [p["reason"] for p in mixed["problems"]]
    texts += [mixed["summary"]["root"], *mixed["summary"]["notes"], HTML_LABEL]
    for text in texts:
        assert html.escape(text) in mixed_page, text
    for raw in ("<b>x</b>", "<i>bad</i>", "<root>", "<broken>", "<none>", "<dataset>", 'a<b"'):
        assert raw not in mixed_page, raw


def test_images_are_embedded_pngs_and_nothing_is_fetched(mixed_page: str) -> None:
    pngs = images(mixed_page)
    assert len(pngs) == 2
    assert all(p.startswith(PNG_SIGNATURE) for p in pngs)
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", mixed_page, re.IGNORECASE)
    assert refs and all(r.startswith("data:") for r in refs)
    assert not re.search(r"https?://|url\(|@import|<script", mixed_page, re.IGNORECASE)


def test_class_table_and_silent_note(mixed_page: str) -> None:
    classes = mixed_page[mixed_page.index("<h2 id='classes'>") : mixed_page.index("<h2 id='pictures'>")]
    cat = re.search(r"<tr><td>cat</td>.*?</tr>", classes).group(0)
    assert "(1 silent)" in cat and "12.50" in cat  # max clipped 0.125 -> 12.50 %
    dog = re.search(r"<tr><td>dog</td>.*?</tr>", classes).group(0)
    assert "16000, 44100" in dog and "1, 2" in dog and "4.90" in dog  # median of 4.8 and 5.0
    assert "1 digitally silent file" in mixed_page


@pytest.mark.parametrize(
    ("ok", "policy", "n_warnings", "quarantined", "css", "text"),
    [
        (True, "fail", 0, [], "pass", "PASSED"),
        (True, "fail", 2, [], "warn", "PASSED WITH WARNINGS"),
        (False, "fail", 0, [], "fail", "FAILED"),
        (True, "quarantine", 0, ["a/1.wav", "b/2.wav"], "warn", "QUARANTINED 2 files, continued"),
        (True, "quarantine", 0, ["a/1.wav"], "warn", "QUARANTINED 1 file, continued"),
        (True, "quarantine", 1, [], "warn", "PASSED WITH WARNINGS"),
        (False, "quarantine", 0, ["a/1.wav"], "fail", "FAILED"),
    ],
)
def test_status_banner(ok: bool, policy: str, n_warnings: int, quarantined: list[str], css: str, text: str) -> None:
    report = make_report([], ok=ok, policy=policy, quarantined=quarantined, n_warnings=n_warnings)
    page = render_html(report)
    assert banner(page) == text
    assert f"<div class='banner {css}'" in page
    totals = page.split("<p class='totals'>")[1].split("</p>")[0]
    assert (" used" in totals) == ok and ("none</b> passed on (the run stops here)" in totals) == (not ok)


def test_quarantine_sentence_and_list() -> None:
    facts = [fact(f"{lb}/{i}.wav", lb) for lb in ("a", "b") for i in range(4)]
    quarantined = ["a/0.wav", "b/3.wav", "b/<2>.wav"]
    page = render_html(make_report(facts, ok=True, policy="quarantine", quarantined=quarantined))
    assert "used + quarantined = listed: 5 + 3 = 8" in page
    assert "does not add up" not in page
    assert "<li>b/&lt;2&gt;.wav</li>" in page
    classes = page[page.index("<h2 id='classes'>") :]
    assert re.search(r"<tr><td>a</td><td class='num'>4</td><td class='num'>3</td><td class='num'>1</td>", classes)
    inconsistent = make_report(facts, ok=True, policy="quarantine", quarantined=quarantined, n_used=6)
    page = render_html(inconsistent)
    assert "used + quarantined = listed: 6 + 3 = 8" in page and "does not add up" in page


def test_long_problem_lists_are_cut_with_a_count() -> None:
    problems = [problem(f"f/{i}.wav", "duration", "error", f"too short {i}") for i in range(MAX_ROWS + 37)]
    page = render_html(make_report([], problems, ok=False))
    assert page.count("too short ") == MAX_ROWS
    assert f"Showing the first {MAX_ROWS} of {MAX_ROWS + 37} errors; 37 more are in the JSON report." in page


def test_fifty_labels_render() -> None:
    facts = [fact(f"c{k}/{i}.wav", f"class-{k:02d}", duration_s=1 + k / 10, rms_dbfs=-60 + k) for k in range(50)
             for i in range(2)]  # fmt: skip
    page = render_html(make_report(facts))
    assert all(f"<td>class-{k:02d}</td>" in page for k in range(50))
    pngs = images(page)
    assert len(pngs) == 2 and all(p.startswith(PNG_SIGNATURE) for p in pngs)
    one = images(render_html(make_report(facts[:2])))[0]
    assert _png_height(pngs[0]) > _png_height(one)  # the per-class plot grows with the labels


def _png_height(png: bytes) -> int:
    return int.from_bytes(png[20:24], "big")  # IHDR: width at 16..20, height at 20..24


def test_empty_facts_render() -> None:
    page = render_html(make_report([], expectations={}, notes=[]))
    assert banner(page) == "PASSED"
    assert "No errors." in page and "No decoded recordings to plot." in page and "No checks were run." in page
    assert images(page) == []


def test_every_file_unreadable_renders() -> None:
    facts = [unreadable(f"a/{i}.wav", "a") for i in range(3)]
    problems = [problem(f["path"], "readable", "error", f["error"]) for f in facts]
    page = render_html(make_report(facts, problems, ok=False))
    assert banner(page) == "FAILED"
    assert "No decoded recordings to plot." in page
    assert page.count(html.escape("not a RIFF file & <broken>")) == 3


def test_minimal_dict_renders() -> None:
    page = render_html({"ok": True, "summary": {}, "problems": [], "facts": []})
    assert banner(page) == "PASSED" and page.rstrip().endswith("</html>")


def test_long_problem_lists_start_folded_with_counts_by_check() -> None:
    facts = [fact(f"a/{i}.wav", "a") for i in range(40)]
    many = [problem(f"a/{i}.wav", "low_level", "warning", "low level") for i in range(30)]
    page = render_html(make_report(facts, many + [problem("a/39.wav", "clipping", "warning", "clipped")]))
    assert "<details><summary>by check: low_level 30, clipping 1</summary>" in page  # folded
    few = render_html(make_report(facts, many[:2]))
    assert "<details open><summary>by check: low_level 2</summary>" in few
