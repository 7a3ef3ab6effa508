"""Issue 21: the example workflows run as loaded. The pack ships the files they load
(``example_inputs/``) and copies them into ComfyUI's input folder, never replacing a user's file."""

from __future__ import annotations

import json
import re
from pathlib import Path


from test_nodes import comfy_base, pack  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "workflows"
INPUTS = REPO / "example_inputs"


def loaded_files(workflow: dict) -> set[str]:
    """The input files a workflow's loader nodes name (Load Image / Audio / Video, Load Audio List)."""
    found = set()
    for node in workflow["nodes"]:
        values = node.get("widgets_values") or []
        if node["type"] in ("LoadImage", "LoadAudio", "LoadVideo") and values:
            found.add(str(values[0]))
        if node["type"] == "SadTalkerLoadAudioList" and values:
            found |= {f"{values[0]}/{p.name}" for p in (INPUTS / str(values[0])).glob("*")}
            found.add(f"{values[0]}/")   # the folder itself must be shipped
    return found


def test_every_file_an_example_loads_is_shipped():
    for path in sorted(EXAMPLES.glob("*.json")):
        for name in loaded_files(json.loads(path.read_text())):
            assert (INPUTS / name).exists(), f"{path.name} loads {name}, which example_inputs/ does not ship"


def test_example_inputs_are_copied_once_and_never_replace_a_users_file(pack, comfy_base, monkeypatch, tmp_path):
    import folder_paths

    monkeypatch.delenv("SADTALKER_NO_EXAMPLE_INPUTS", raising=False)
    target = tmp_path / "input"
    target.mkdir()
    monkeypatch.setattr(folder_paths, "get_input_directory", lambda: str(target))
    (target / "portrait.png").write_bytes(b"the user's own portrait")
    copied = pack.nodes.comfy_glue.install_example_inputs()
    shipped = sorted(str(p.relative_to(INPUTS)) for p in INPUTS.rglob("*") if p.is_file() and p.name != "README.md")
    assert sorted(copied) == [name for name in shipped if name != "portrait.png"]
    assert (target / "portrait.png").read_bytes() == b"the user's own portrait"
    for name in copied:
        assert (target / name).read_bytes() == (INPUTS / name).read_bytes()
    assert pack.nodes.comfy_glue.install_example_inputs() == []          # the second start copies nothing
    assert not [p for p in target.rglob("*") if re.search(r"\.copy\.[0-9a-f]{8}", p.name)]
    monkeypatch.setenv("SADTALKER_NO_EXAMPLE_INPUTS", "1")
    (target / "speech.wav").unlink()
    assert pack.nodes.comfy_glue.install_example_inputs() == []
