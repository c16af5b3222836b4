"""The generated reference pages of the documentation site (tools/docs/reference.py): the
committed pages are what the generator writes now, every params.yaml key is described there,
every field of the config classes is on the page, and a changed source changes the page."""

from __future__ import annotations

import pkgutil
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from audioflow.config import CNNOptions, DataConfig, FeaturesConfig, Params, TrainConfig
from tools.docs import reference
from tools.docs.reference import CLI, PARAMETERS

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = "run `uv run python -m tools.docs.reference --write` (python -m tools.docs.reference --write)"
PARAMS_TEXT = (ROOT / "params.yaml").read_text()


@pytest.fixture(scope="module")
def pages() -> dict[Path, str]:
    return reference.pages(ROOT)


def _config_keys(cls: type[BaseModel] = Params, prefix: str = "") -> tuple[list[str], list[str]]:
    """(leaf keys, subsection keys) of the config classes, dotted, walked here rather than by the
    generator."""
    leaves, subsections = [], []
    for name, f in cls.model_fields.items():
        dotted = prefix + (f.alias or name)
        if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
            subsections.append(dotted)
            more, subs = _config_keys(f.annotation, dotted + ".")
            leaves += more
            subsections += subs
        else:
            leaves.append(dotted)
    return leaves, subsections


def _yaml_keys(d: dict, subsections: set[str], prefix: str = "") -> list[str]:
    """Every dotted key of a loaded params.yaml (leaves and subsections)."""
    out = []
    for k, v in d.items():
        out.append(prefix + k)
        if prefix + k in subsections:
            out += _yaml_keys(v, subsections, prefix + k + ".")
    return out


# ---------------------------------------------------------------------------- stale pages


@pytest.mark.parametrize("page", [PARAMETERS, CLI], ids=str)
def test_generated_page_is_what_the_generator_writes(pages: dict[Path, str], page: Path):
    committed = (ROOT / page).read_text() if (ROOT / page).is_file() else None
    assert committed == pages[page], f"{page} is stale: {REGENERATE}"


def test_check_names_a_stale_page(tmp_path: Path, pages: dict[Path, str]):
    """``stale`` (behind ``--check``) passes a fresh copy and names an edited or missing page."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    for path, text in pages.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    assert reference.stale(tmp_path) == []
    (tmp_path / PARAMETERS).write_text(pages[PARAMETERS].replace("AdamW", "Adam"))
    (tmp_path / CLI).unlink()
    assert reference.stale(tmp_path) == [PARAMETERS, CLI]


def test_check_command_passes_on_the_committed_pages():
    p = subprocess.run([sys.executable, "-m", "tools.docs.reference", "--check"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, f"{p.stdout}{p.stderr}\n{REGENERATE}"


# ------------------------------------------------------------------------------ descriptions


def test_every_params_yaml_key_has_a_description():
    leaves, subsections = _config_keys()
    keys = _yaml_keys(yaml.safe_load(PARAMS_TEXT), set(subsections))
    comments = reference.yaml_comments(PARAMS_TEXT)
    assert sorted(comments) == sorted(keys), "the comment parser does not see the keys YAML sees"
    undescribed = [k for k in keys if k not in subsections and not reference.split_unit(comments[k])[1].strip()]
    assert not undescribed, f"params.yaml keys without a description (a comment after the value): {undescribed}"
    assert reference.problems(PARAMS_TEXT) == []


def test_every_config_field_is_in_params_yaml_and_on_the_page():
    leaves, subsections = _config_keys()
    in_yaml = set(_yaml_keys(yaml.safe_load(PARAMS_TEXT), set(subsections)))
    assert [k for k in leaves if k not in in_yaml] == [], "config fields missing from params.yaml"
    page = (ROOT / PARAMETERS).read_text()
    rows = re.findall(r"^\| `([^`]+)` \|", page, re.M)
    assert rows == leaves, f"{PARAMETERS} does not list exactly the config fields, in order: {REGENERATE}"
    for sub in subsections:
        assert re.search(rf"^#+ {re.escape(sub)}$", page, re.M), f"no heading for {sub}"


def test_units_follow_the_convention():
    assert reference.split_unit("s; shorter files hold little") == ("s", "shorter files hold little")
    assert reference.split_unit("dB re full scale; a quieter one") == ("dB re full scale", "a quieter one")
    assert reference.split_unit("Hz; highest frequency; null = Nyquist") == ("Hz", "highest frequency; null = Nyquist")
    for text in ("stratified only; kfold tests on each fold", "CSV under data.root; null = discover", "Hz",
                 "peak: dB re each window's loudest cell", "s;no space"):
        assert reference.split_unit(text) == ("", text)
    assert reference.yaml_comments(PARAMS_TEXT)["validate.silence_dbfs"].startswith("dB re full scale; ")
    assert "| `validate.silence_dbfs` | `float` | `-60.0` | dB re full scale | a quieter recording" in \
        (ROOT / PARAMETERS).read_text()


def test_comment_parser_reads_continuations_by_column():
    text = textwrap.dedent("""\
        # header: describes no key
        a:
          b: 1        # first
                      # second
          c: "x # y"  # quoted hash is a value
            # another column: not c's
          d: 2

        e:            # section e
          f:
            g: [1, 2] # g
                      # g's continuation
          h: 3        # h
                      # h goes on

                      # after a blank line: not h's
        """)
    assert reference.yaml_comments(text) == {
        "a": "", "a.b": "first second", "a.c": "quoted hash is a value", "a.d": "", "e": "section e", "e.f": "",
        "e.f.g": "g g's continuation", "e.h": "h h goes on"}


def test_types_render_readably():
    f = {**TrainConfig.model_fields, **FeaturesConfig.model_fields}
    assert reference.field_type(f["epochs"]) == 'int ≥ 1 | "auto"'
    assert reference.field_type(f["level"]) == '"peak" | "absolute"'
    assert reference.field_type(f["top_db"]) == "float in (0, 200]"
    assert reference.field_type(f["label_smoothing"]) == "float in [0, 1)"
    assert reference.field_type(f["noise_snr_db"]) == "[float, float]"
    assert reference.field_type(CNNOptions.model_fields["channels"]) == "list[int], non-empty"
    assert reference.field_type(DataConfig.model_fields["manifest"]) == "str | null"


# ------------------------------------------------------------------------- staleness caught


def _edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


@pytest.mark.parametrize("old, new, shows", [
    ("# peak, after warm-up; cosine decay to 0", "# peak, after warm-up; linear decay to 0", "linear decay to 0"),
    ("# scaled with the schedule when epochs auto", "# scaled with the plan when epochs auto", "scaled with the plan"),
    ("  win_ms: 25                  # ms; STFT window", "  win_ms: 25                  # s; STFT window",
     "| `25.0` | s | STFT window |"),
    ("  group_column: patient ", "  group_column: speaker ", "`null` (`speaker`)"),
], ids=["inline", "continuation", "unit", "value"])
def test_a_changed_params_yaml_makes_the_page_stale(tmp_path: Path, pages: dict[Path, str], old, new, shows):
    changed = _edit(PARAMS_TEXT, old, new)
    page = reference.parameters_page(changed)
    assert page != pages[PARAMETERS] and shows in page and shows not in pages[PARAMETERS]
    (tmp_path / "params.yaml").write_text(changed)
    for path, text in pages.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    assert reference.stale(tmp_path) == [PARAMETERS]


def test_a_key_missing_or_undescribed_in_params_yaml_is_reported():
    text = _edit(PARAMS_TEXT, "  seed: 42                    # of the random split: the same seed and recordings "
                              "give the same split\n", "")
    text = _edit(text, "  lr: 0.003                   # peak, after warm-up; cosine decay to 0", "  lr: 0.003")
    text = _edit(text, "export:\n", "export:\n  extra: 1  # not a field\n")
    assert reference.problems(text) == [
        "split.seed: not in params.yaml (add it there, with its description)",
        "train.lr: no description in params.yaml (a comment after the value)",
        "export.extra: in params.yaml but not in the config classes"]
    page = reference.parameters_page(text.replace("  extra: 1  # not a field\n", ""))
    assert "| `split.seed` | `int` | `42` |  | *not in params.yaml* |" in page


# ------------------------------------------------------------------------------- cli and api


def test_cli_page_does_not_depend_on_the_terminal(monkeypatch, pages: dict[Path, str]):
    monkeypatch.setenv("COLUMNS", "40")
    assert reference.cli_page() == pages[CLI]
    import os

    assert os.environ["COLUMNS"] == "40"  # restored
    from audioflow.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    for name in sub.choices:
        assert f"\n### audioflow {name}\n\n```text\nusage: audioflow {name} " in pages[CLI], name
    for prog in ("python -m pipelines.kubeflow_cli compile", "python -m pipelines.run"):
        assert f"\n## {prog}\n" in pages[CLI] or f"\n### {prog}\n" in pages[CLI], prog


def test_api_page_directives_name_real_objects():
    """mkdocs build --strict renders docs/reference/api.md; here, cheaply, its `::: object`
    directives and their `members` resolve."""
    text = (ROOT / "docs/reference/api.md").read_text()
    blocks = re.findall(r"^::: (\S+)\n((?:    .*\n|\n)*)", text, re.M)
    assert {name for name, _ in blocks} >= {"audioflow.inference", "audioflow.config", "audioflow.stages"}
    for name, block in blocks:
        obj = pkgutil.resolve_name(name)
        options = (yaml.safe_load(textwrap.dedent(block)) or {}).get("options", {})
        for member in options.get("members", []):
            assert hasattr(obj, member), f"{name} has no {member}"
