"""Findable and explained, in English and Chinese (issue 21): every node registered in NODE_CLASS_MAPPINGS
has SEARCH_ALIASES, a tooltip on every input and output, its texts in ``locales/{en,zh}`` (ComfyUI's
custom-node i18n files, written by ``scripts/build_locales.py``) and a help page in ``web/docs`` for the
node library's help panel; pyproject.toml's classifiers are ones the Comfy Registry accepts.

No model is loaded: the node classes and a few small files are read, and the build script runs once.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LANGS = ("en", "zh")
HAN = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def registry():
    from test_nodes import load_pack

    pack = load_pack()
    return pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS


def inputs(cls) -> dict[str, dict]:
    """input name -> its options, required then optional (what the node shows)."""
    types = cls.INPUT_TYPES()
    found = {}
    for section in ("required", "optional"):
        for name, spec in types.get(section, {}).items():
            found[name] = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return found


def outputs(cls) -> tuple[str, ...]:
    return tuple(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES))


def locale(lang: str, name: str) -> dict:
    return json.loads((REPO / "locales" / lang / name).read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- the node classes


def test_every_node_has_search_aliases(registry):
    classes, _ = registry
    for key, cls in classes.items():
        aliases = getattr(cls, "SEARCH_ALIASES", None)
        assert isinstance(aliases, list) and aliases, f"{key} has no SEARCH_ALIASES list"
        assert all(isinstance(a, str) and a.strip() for a in aliases), key
        assert len(set(aliases)) == len(aliases), f"{key}: repeated aliases"
        assert "sadtalker" in aliases, key


def test_every_input_and_output_has_a_tooltip(registry):
    classes, _ = registry
    missing = []
    for key, cls in classes.items():
        assert isinstance(getattr(cls, "DESCRIPTION", None), str) and cls.DESCRIPTION.strip(), key
        missing += [f"{key}.{name}" for name, options in inputs(cls).items()
                    if not str(options.get("tooltip", "")).strip()]
        tooltips = getattr(cls, "OUTPUT_TOOLTIPS", None)
        if not isinstance(tooltips, tuple) or len(tooltips) != len(cls.RETURN_TYPES):
            missing.append(f"{key}: OUTPUT_TOOLTIPS must be a tuple with one tooltip per output, got {tooltips!r}")
        else:
            missing += [f"{key} output {i}" for i, t in enumerate(tooltips) if not (isinstance(t, str) and t.strip())]
    assert not missing, "without a tooltip: " + ", ".join(missing)


def test_reference_node_has_a_title_that_fits(registry):
    """The title was cut off on the node; the class key stays, so saved workflows still load."""
    classes, names = registry
    assert "SadTalkerReferenceToCoefficients" in classes
    assert names["SadTalkerReferenceToCoefficients"] == "SadTalker Video to Coefficients"
    assert len(names["SadTalkerReferenceToCoefficients"]) <= len(names["SadTalkerAudioToCoefficients"])


# --------------------------------------------------------------------------- locales


@pytest.mark.parametrize("lang", LANGS)
def test_locales_name_and_explain_every_node_input_and_output(registry, lang):
    classes, names = registry
    defs = locale(lang, "nodeDefs.json")
    problems = []
    for key, cls in classes.items():
        entry = defs.get(key)
        if entry is None:
            problems.append(f"{key}: not in locales/{lang}/nodeDefs.json")
            continue
        texts = [entry.get("display_name"), entry.get("description")]
        for name, options in inputs(cls).items():
            text = entry.get("inputs", {}).get(name, {})
            if not text.get("name") or not text.get("tooltip"):
                problems.append(f"{key}.{name}: no name or tooltip")
            texts.append(text.get("tooltip"))
            if lang == "en" and text.get("tooltip") != options.get("tooltip"):
                problems.append(f"{key}.{name}: the tooltip differs from the node's")
        for index, name in enumerate(outputs(cls)):
            text = entry.get("outputs", {}).get(str(index), {})
            if not text.get("name") or not text.get("tooltip"):
                problems.append(f"{key} output {index} ({name}): no name or tooltip")
            texts.append(text.get("tooltip"))
        if lang == "en":
            if entry.get("display_name") != names[key] or entry.get("description") != cls.DESCRIPTION:
                problems.append(f"{key}: display name or description differs from the node's")
        else:   # translated, not copied: every sentence has Chinese in it
            problems += [f"{key}: untranslated {text!r}" for text in texts if not HAN.search(text or "")]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("lang", LANGS)
def test_main_json_names_the_category_and_the_socket_types(registry, lang):
    classes, _ = registry
    main = locale(lang, "main.json")
    for cls in classes.values():
        for part in cls.CATEGORY.split("/"):
            assert main["nodeCategories"].get(part), part
        types = set(cls.RETURN_TYPES) | set(_input_types(cls))
        for own in (t for t in types if isinstance(t, str) and t.startswith("SADTALKER_")):
            assert main["dataTypes"].get(own), own
    if lang == "zh":
        assert all(HAN.search(text) for text in main["dataTypes"].values())


def _input_types(cls):
    for section in ("required", "optional"):
        for spec in cls.INPUT_TYPES().get(section, {}).values():
            yield spec[0] if isinstance(spec[0], str) else None


def test_locale_files_are_what_the_build_script_writes():
    """``scripts/build_locales.py --check``: the committed files match the node classes and every
    English text has its Chinese translation."""
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "build_locales.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_build_script_lists_untranslated_texts(tmp_path):
    """An input or tooltip without a translation fails the build, naming the English text to translate."""
    table = json.loads((REPO / "scripts" / "locales_zh.json").read_text(encoding="utf-8"))
    dropped = "Add eye blinks."
    assert dropped in table
    del table[dropped]
    partial = tmp_path / "zh.json"
    partial.write_text(json.dumps(table, ensure_ascii=False), encoding="utf-8")
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "build_locales.py"), "--check",
                          "--zh-table", str(partial)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "1 English text(s) have no Chinese translation" in run.stderr
    assert json.dumps(dropped) in run.stderr


# --------------------------------------------------------------------------- help pages


def test_every_node_has_a_help_page_in_english_and_chinese(registry):
    """web/docs/<Node>.md (every locale falls back to it) and web/docs/<Node>/zh.md, as the frontend's node
    help looks them up; each is titled with the node's name and names every input and output."""
    classes, names = registry
    zh = locale("zh", "nodeDefs.json")
    problems = []
    for key, cls in classes.items():
        for path, title in ((REPO / "web" / "docs" / f"{key}.md", names[key]),
                            (REPO / "web" / "docs" / key / "zh.md", zh.get(key, {}).get("display_name"))):
            if not path.is_file():
                problems.append(f"{path.relative_to(REPO)} is missing")
                continue
            text = path.read_text(encoding="utf-8")
            if text.splitlines()[0] != f"# {title}":
                problems.append(f"{path.relative_to(REPO)}: the first line is not '# {title}'")
            problems += [f"{path.relative_to(REPO)} does not name `{name}`"
                         for name in [*inputs(cls), *outputs(cls)] if f"`{name}`" not in text]
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- registry classifiers


def test_pyproject_classifiers_are_ones_the_registry_reads():
    """The Comfy Registry keeps OS and accelerator classifiers only when every one is valid
    (ComfyUI comfy_config/config_parser.py: validate_and_extract_os/accelerator_classifiers)."""
    classifiers = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["classifiers"]
    systems = [c.removeprefix("Operating System :: ") for c in classifiers if c.startswith("Operating System :: ")]
    accelerators = [c.removeprefix("Environment :: ") for c in classifiers if c.startswith("Environment ::")]
    assert systems and all(s.startswith(("Microsoft", "POSIX", "MacOS", "OS Independent")) for s in systems)
    assert accelerators and set(accelerators) <= {"GPU :: NVIDIA CUDA", "GPU :: AMD ROCm", "GPU :: Intel Arc",
                                                  "NPU :: Huawei Ascend", "GPU :: Apple Metal"}
    assert "Operating System :: OS Independent" in classifiers
    assert "Environment :: GPU :: NVIDIA CUDA" in classifiers
