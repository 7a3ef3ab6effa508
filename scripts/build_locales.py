"""Writes the pack's ComfyUI translations, ``locales/<lang>/main.json`` and ``locales/<lang>/nodeDefs.json``,
from the node classes themselves.

ComfyUI's server reads ``locales/<lang>/*.json`` of every custom-node folder (``app/custom_node_manager.py``,
``/i18n``) and the frontend looks a node's texts up as ``nodeDefs.<NodeClass>.display_name`` / ``.description``
/ ``.inputs.<input>.name`` / ``.inputs.<input>.tooltip`` / ``.outputs.<index>.name`` / ``.outputs.<index>.tooltip``,
and the category and socket types in main.json as ``nodeCategories.<part>`` and ``dataTypes.<TYPE>``.

* ``en`` is what the code says: display names, DESCRIPTION, every input of INPUT_TYPES with its tooltip,
  RETURN_NAMES with OUTPUT_TOOLTIPS (input names stay as they are, as ComfyUI's own English file keeps them).
* ``zh`` translates every English text through ``scripts/locales_zh.json`` (English text -> Simplified Chinese).
  A text without a translation fails the run with the list of texts to translate, ready to paste into that
  file: add an input or change a tooltip, run this script, translate what it prints.

    python scripts/build_locales.py           # write the four files
    python scripts/build_locales.py --check   # exit 1 if a file is not what the code gives, or a text is untranslated

The pack is imported the way the tests import it (the repository as a package, over ``tests/comfy_stub``), with
every node included even when one of its optional dependencies is missing here.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOCALES = REPO / "locales"
ZH_TABLE = REPO / "scripts" / "locales_zh.json"
PACK_NAME = "sadtalker_pack_for_locales"

#: the companion widget ComfyUI's frontend adds after an INT with control_after_generate (a seed); its English
#: label as ComfyUI's own nodeDefs.json writes it
CONTROL_AFTER_GENERATE = ("control_after_generate", "control after generate")


def i18n_key(name: str) -> str:
    """The frontend's normalizeI18nKey: a dot would split the key path."""
    return name.replace(".", "_")


def load_nodes() -> tuple[dict, dict]:
    """(class key -> node class, class key -> display name) of every node the pack defines."""
    sys.path.insert(0, str(REPO / "tests" / "comfy_stub"))
    import folder_paths

    folder_paths.set_base(tempfile.mkdtemp(prefix="sadtalker_locales_"))   # no real input/output folder is listed
    if PACK_NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK_NAME, REPO / "__init__.py",
                                                      submodule_search_locations=[str(REPO)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK_NAME] = module
        spec.loader.exec_module(module)
    registry = sys.modules[PACK_NAME + ".nodes"]
    registry.missing_requirements = lambda node: []   # translate every node, also one disabled on this machine
    return registry.build_mappings()


def _inputs(cls) -> list[tuple[str, str | None, dict]]:
    """(name, tooltip, options) of every input a user sees, in the node's order."""
    found = []
    types = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, spec in types.get(section, {}).items():
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            found.append((name, options.get("tooltip"), options))
    return found


def english_defs(classes: dict, names: dict) -> dict:
    """The en nodeDefs.json: every text as the code has it."""
    defs = {}
    for key in sorted(classes):
        cls = classes[key]
        entry = {"display_name": names.get(key, key)}
        if getattr(cls, "DESCRIPTION", ""):
            entry["description"] = cls.DESCRIPTION
        inputs = {}
        for name, tooltip, options in _inputs(cls):
            inputs[i18n_key(name)] = {"name": name, **({"tooltip": tooltip} if tooltip else {})}
            if options.get("control_after_generate"):
                inputs[CONTROL_AFTER_GENERATE[0]] = {"name": CONTROL_AFTER_GENERATE[1]}
        if inputs:
            entry["inputs"] = inputs
        return_names = getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)
        tooltips = getattr(cls, "OUTPUT_TOOLTIPS", ()) or ()
        outputs = {}
        for index, name in enumerate(return_names):
            outputs[str(index)] = {"name": name}
            if index < len(tooltips) and tooltips[index]:
                outputs[str(index)]["tooltip"] = tooltips[index]
        if outputs:
            entry["outputs"] = outputs
        defs[i18n_key(key)] = entry
    return defs


def english_main(classes: dict) -> dict:
    """The en main.json: the category (each part of its path) and the pack's own socket types."""
    categories, types = {}, set()
    for cls in classes.values():
        for part in cls.CATEGORY.split("/"):
            categories[i18n_key(part)] = part
        for section in ("required", "optional"):
            types.update(spec[0] for spec in cls.INPUT_TYPES().get(section, {}).values() if isinstance(spec[0], str))
        types.update(t for t in cls.RETURN_TYPES if isinstance(t, str))
    own = sorted(t for t in types if t.startswith("SADTALKER_"))   # core types are ComfyUI's to translate
    return {"nodeCategories": dict(sorted(categories.items())), "dataTypes": {i18n_key(t): t for t in own}}


def translate(tree, table: dict, missing: list, used: set):
    """``tree`` with every string value replaced by its translation (JSON keys stay)."""
    if isinstance(tree, dict):
        return {key: translate(value, table, missing, used) for key, value in tree.items()}
    if isinstance(tree, str):
        used.add(tree)
        if tree in table and table[tree].strip():
            return table[tree]
        if tree not in missing:
            missing.append(tree)
        return tree
    return tree


def build(zh_table: Path = ZH_TABLE) -> tuple[dict[Path, str], list[str], list[str]]:
    """({file: its text}, English texts without a translation, translations no text uses)."""
    classes, names = load_nodes()
    en = {"main.json": english_main(classes), "nodeDefs.json": english_defs(classes, names)}
    table = json.loads(zh_table.read_text(encoding="utf-8"))
    missing: list[str] = []
    used: set[str] = set()
    zh = {name: translate(tree, table, missing, used) for name, tree in en.items()}
    files = {}
    for lang, trees in (("en", en), ("zh", zh)):
        for name, tree in trees.items():
            files[LOCALES / lang / name] = json.dumps(tree, indent=2, ensure_ascii=False) + "\n"
    unused = sorted(set(table) - used)
    return files, missing, unused


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a locale file is out of date or a text is untranslated")
    parser.add_argument("--zh-table", type=Path, default=ZH_TABLE, help="the English -> Chinese table (JSON)")
    args = parser.parse_args(argv)
    files, missing, unused = build(args.zh_table)
    table = args.zh_table.resolve()
    table = table.relative_to(REPO) if table.is_relative_to(REPO) else table
    if unused:
        print(f"note: {len(unused)} translation(s) in {table} are no longer used "
              "(remove them):\n" + "\n".join(f"  {json.dumps(text, ensure_ascii=False)}" for text in unused),
              file=sys.stderr)
    if missing:
        print(f"error: {len(missing)} English text(s) have no Chinese translation. Add them to "
              f"{table} and run this script again:\n"
              + ",\n".join(f"  {json.dumps(text, ensure_ascii=False)}: \"\"" for text in missing), file=sys.stderr)
        return 1
    stale = [path for path, text in files.items()
             if not path.is_file() or path.read_text(encoding="utf-8") != text]
    if args.check:
        if stale:
            print("error: out of date (run python scripts/build_locales.py): "
                  + ", ".join(str(p.relative_to(REPO)) for p in stale), file=sys.stderr)
            return 1
        print(f"locales up to date: {len(files)} files")
        return 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[path], encoding="utf-8")
    print(f"wrote {len(stale)} of {len(files)} locale files" if stale else f"locales up to date: {len(files)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
