"""Publishing to the Comfy Registry (issue 11 item 6): pyproject.toml per the registry's spec, what
``.comfyignore`` leaves in the archive, and no code the registry's security scan rejects (``eval`` /
``exec``, pip installs through subprocess or os.system)."""

from __future__ import annotations

import ast
import fnmatch
import os
import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOCAL = {".git", ".venv", ".pytest_cache", "__pycache__", ".ruff_cache"}


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_pyproject_follows_the_registry_spec():
    data = pyproject()
    project, comfy = data["project"], data["tool"]["comfy"]
    name = project["name"]
    assert "comfyui" not in name.lower()
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]*([-_.][A-Za-z0-9]+)*", name) and len(name) < 100
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert project["license"] == {"file": "LICENSE"} and (REPO / "LICENSE").is_file()
    assert project["urls"]["Repository"].startswith("https://github.com/")
    assert comfy["PublisherId"] and comfy["DisplayName"]
    assert re.fullmatch(r">=\d+\.\d+\.\d+", comfy["requires-comfyui"])
    # the Icon is a real picture: the raw URL of a square image kept in this repository
    repo_path = project["urls"]["Repository"].removeprefix("https://github.com/")
    prefix = f"https://raw.githubusercontent.com/{repo_path}/main/"
    assert comfy["Icon"].startswith(prefix)
    from PIL import Image

    with Image.open(REPO / comfy["Icon"].removeprefix(prefix)) as icon:
        assert icon.width == icon.height >= 128


def ignored(path: str, patterns: list[str]) -> bool:
    """gitignore-style match for the simple patterns .comfyignore uses (folders ``x/``, globs)."""
    for pattern in patterns:
        if pattern.endswith("/"):
            if path.startswith(pattern) or f"/{pattern}" in f"/{path}":
                return True
        elif fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(os.path.basename(path), pattern):
            return True
    return False


def archive_files() -> list[str]:
    """The pack's files the registry archive keeps (this checkout minus .comfyignore)."""
    lines = (REPO / ".comfyignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    files = []
    for root, dirs, names in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in LOCAL]
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), REPO).replace(os.sep, "/")
            if not ignored(rel, patterns):
                files.append(rel)
    return files


def test_comfyignore_keeps_tests_and_benchmarks_out_of_the_archive():
    files = archive_files()
    assert not [f for f in files if f.startswith(("tests/", "benchmarks/", ".ci/"))]
    for needed in ("__init__.py", "nodes/__init__.py", "sadtalker_models/pipeline.py", "web/sadtalker.js",
                   "requirements.txt", "pyproject.toml", "LICENSE"):
        assert needed in files, needed
    assert any(f.startswith("workflows/") for f in files)


# --------------------------------------------------------------------------- security scan

def risky_calls(source: str, filename: str = "<source>") -> list[str]:
    """Calls the registry's scan rejects: eval/exec/compile builtins, pip run through subprocess or
    os.system/os.popen, ``import pip``."""
    found = []
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            if any(n == "pip" or n.startswith("pip.") for n in names):
                found.append(f"{filename}:{node.lineno}: imports pip")
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in ("eval", "exec", "__import__"):
            found.append(f"{filename}:{node.lineno}: {func.id}()")
        dotted = ast.unparse(func)
        if dotted.startswith("subprocess.") or dotted in ("os.system", "os.popen", "Popen", "run", "check_call",
                                                          "check_output", "call"):
            words = [c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
            text = " ".join(words).lower()
            if re.search(r"\bpip\b|\binstall\b", text):
                found.append(f"{filename}:{node.lineno}: {dotted}() runs an install")
    return found


def test_the_scan_catches_what_the_registry_rejects():
    bad = ("import subprocess, sys, os\n"
           "subprocess.check_call([sys.executable, '-m', 'pip', 'install', 'x'])\n"
           "os.system('pip install y')\n"
           "eval('1+1')\n"
           "exec('x = 1')\n"
           "import pip\n")
    assert len(risky_calls(bad)) == 5
    ok = "import subprocess\nsubprocess.run(['ffmpeg', '-i', 'a.mp4'])\nmodel.eval()\n"
    assert risky_calls(ok) == []


def test_pack_has_no_eval_exec_or_pip_installs():
    problems = []
    for rel in archive_files():
        path = REPO / rel
        if rel.endswith(".py"):
            problems += risky_calls(path.read_text(encoding="utf-8"), rel)
        elif rel.endswith(".js"):
            text = path.read_text(encoding="utf-8")
            for pattern in (r"(?<![\w.])eval\s*\(", r"new\s+Function\s*\("):
                problems += [f"{rel}: {m.group(0)}" for m in re.finditer(pattern, text)]
    assert not problems, "\n".join(problems)


def test_dependencies_are_listed_once():
    """requirements.txt is the one list: pyproject.toml repeats it exactly (the registry reads that),
    and the node registry's install hints come from it, for every module a node needs."""
    from test_nodes import load_pack

    registry = load_pack().nodes
    listed = registry.read_requirements(str(REPO / "requirements.txt"))
    with open(REPO / "pyproject.toml", "rb") as handle:
        assert tomllib.load(handle)["project"]["dependencies"] == list(listed.values())
    assert listed["cv2"] == "opencv-python-headless>=4.8" and listed["numpy"] == "numpy>=1.24"
    needed = {m for needs in registry._NEEDS.values() for m in needs if m != "landmarks"}
    assert needed <= set(listed) and "dlib" in listed


def test_template_browser_folder_has_a_thumbnail_per_workflow():
    folder = "workflows"
    workflows = sorted((REPO / folder).glob("*.json"))
    assert workflows, f"{folder}/ holds the example workflows ComfyUI's template browser lists"
    for path in workflows:
        thumbs = [path.with_suffix(ext) for ext in (".jpg", ".png", ".webp")]
        assert any(t.is_file() and t.stat().st_size < 200_000 for t in thumbs), path.name
