"""Stand-in for ComfyUI's ``folder_paths`` with just what the SadTalker pack uses.

Tests point ``base_path`` somewhere temporary with :func:`set_base`.
"""

from __future__ import annotations

import os
import tempfile

base_path = os.path.join(tempfile.gettempdir(), "sadtalker_comfy_stub")
models_dir = os.path.join(base_path, "models")
folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {}
filename_list_cache: dict = {}
_dirs = {}


def set_base(path: str) -> None:
    """Move models/input/output/temp under ``path`` (and forget registered folders)."""
    global base_path, models_dir
    base_path = str(path)
    models_dir = os.path.join(base_path, "models")
    folder_names_and_paths.clear()
    filename_list_cache.clear()
    for name in ("input", "output", "temp"):
        _dirs[name] = os.path.join(base_path, name)
        os.makedirs(_dirs[name], exist_ok=True)


def _dir(name: str) -> str:
    path = _dirs.get(name, os.path.join(base_path, name))
    os.makedirs(path, exist_ok=True)
    return path


def get_input_directory() -> str:
    return _dir("input")


def get_output_directory() -> str:
    return _dir("output")


def get_temp_directory() -> str:
    return _dir("temp")


def annotated_filepath(name: str) -> tuple[str, str | None]:
    """``"x.png [output]"`` -> ``("x.png", output dir)``; likewise ``[input]``, ``[temp]``; unmarked -> (name, None)."""
    for mark, folder in ((" [output]", get_output_directory), (" [input]", get_input_directory),
                         (" [temp]", get_temp_directory)):
        if name.endswith(mark.strip()):
            return name[:-len(mark)], folder()
    return name, None


def get_annotated_filepath(name: str, default_dir: str | None = None) -> str:
    name, base = annotated_filepath(name)
    return os.path.join(base or default_dir or get_input_directory(), name)


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    paths, _ = folder_names_and_paths.setdefault(folder_name, ([], set()))
    if full_folder_path not in paths:
        paths.insert(0, full_folder_path) if is_default else paths.append(full_folder_path)


def get_folder_paths(folder_name: str) -> list[str]:
    return list(folder_names_and_paths[folder_name][0])


def get_filename_list(folder_name: str) -> list[str]:
    paths, exts = folder_names_and_paths[folder_name]
    found = set()
    for base in paths:
        if not os.path.isdir(base):
            continue
        for root, _dirs_, files in os.walk(base, followlinks=True):
            for f in files:
                if not exts or os.path.splitext(f)[1].lower() in exts:
                    found.add(os.path.relpath(os.path.join(root, f), base).replace(os.sep, "/"))
    return sorted(found)


def get_full_path(folder_name: str, filename: str) -> str | None:
    if folder_name not in folder_names_and_paths:
        return None
    for base in folder_names_and_paths[folder_name][0]:
        path = os.path.join(base, filename)
        if os.path.isfile(path):
            return path
    return None


def get_save_image_path(filename_prefix: str, output_dir: str, image_width: int = 0, image_height: int = 0):
    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    filename = os.path.basename(os.path.normpath(filename_prefix))
    full_output_folder = os.path.join(output_dir, subfolder)
    os.makedirs(full_output_folder, exist_ok=True)
    # parses names exactly as ComfyUI does: the digits must be followed by "_" to count
    counter = 1
    for f in os.listdir(full_output_folder):
        if f[:len(filename) + 1] != filename + "_":
            continue
        try:
            digits = int(f[len(filename) + 1:].split("_")[0])
        except ValueError:
            digits = 0
        counter = max(counter, digits + 1)
    return full_output_folder, filename, counter, subfolder, filename_prefix
