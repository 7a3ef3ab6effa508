"""The real checkpoint loader: strict loading, and errors that say which file and what to do."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import CHECKPOINT_NAME, SADTALKER_MANIFEST
from sadtalker_models.checkpoints import (
    OFFICIAL_FILES,
    CheckpointError,
    load_mapping,
    load_sadtalker,
    mapping_file_for,
    sadtalker_file_for,
)


def test_official_table_matches_reference_file_list():
    from conftest import DATA

    from sadtalker_models.official_files import GFPGAN

    table = json.loads((DATA / "official_files.json").read_text())
    shared = table["sadtalker"]
    assert set(shared) == set(OFFICIAL_FILES)
    for name, entry in shared.items():
        ours = OFFICIAL_FILES[name]
        assert (ours.url, ours.size, ours.sha256) == (entry["url"], entry["size"], entry["sha256"])
    gfpgan = table["enhancer"][GFPGAN.name]
    assert (GFPGAN.url, GFPGAN.size, GFPGAN.sha256) == (gfpgan["url"], gfpgan["size"], gfpgan["sha256"])


def test_file_selection_rules():
    assert sadtalker_file_for(256) == "SadTalker_V0.0.2_256.safetensors"
    assert sadtalker_file_for(512) == "SadTalker_V0.0.2_512.safetensors"
    with pytest.raises(ValueError, match="256 and 512"):
        sadtalker_file_for(300)
    for mode in ("crop", "extcrop", "resize"):
        assert mapping_file_for(mode) == "mapping_00229-model.pth.tar"
    for mode in ("full", "extfull"):
        assert mapping_file_for(mode) == "mapping_00109-model.pth.tar"


def test_loads_every_key_of_the_manifest(parity_models):
    """Every tensor of the file lands in a module, with the manifest's shape."""
    nets = parity_models(0).nets
    manifest = json.loads(SADTALKER_MANIFEST.read_text())
    loaded = {}
    for prefix, module in (("face_3drecon.", nets.recon), ("audio2exp.", nets.expnet),
                           ("audio2pose.", nets.posevae), ("kp_extractor.", nets.kp_detector),
                           ("generator.", nets.generator)):
        loaded.update({prefix + k: list(v.shape) for k, v in module.state_dict().items()})
    assert loaded == {k: v["shape"] for k, v in manifest.items()}
    assert not nets.generator.training and not nets.recon.training


def test_loaded_values_are_the_file_values(weights_dir, parity_models):
    nets = parity_models(0).nets
    stored = load_file(str(weights_dir / CHECKPOINT_NAME))
    for key in ("kp_extractor.kp.weight", "audio2exp.mapping1.weight", "face_3drecon.final_layers.6.bias"):
        prefix, rest = key.split(".", 1)
        module = {"kp_extractor": nets.kp_detector, "audio2exp": nets.expnet, "face_3drecon": nets.recon}[prefix]
        assert torch.equal(module.state_dict()[rest], stored[key])


def test_missing_file_names_folder_and_url(tmp_path):
    with pytest.raises(CheckpointError) as err:
        load_sadtalker(tmp_path / "SadTalker_V0.0.2_256.safetensors")
    message = str(err.value)
    assert str(tmp_path) in message and OFFICIAL_FILES["SadTalker_V0.0.2_256.safetensors"].url in message
    assert "download" in message
    with pytest.raises(CheckpointError, match="mapping_00109-model.pth.tar"):
        load_mapping(tmp_path / "mapping_00109-model.pth.tar")


@pytest.mark.parametrize("keep_bytes", [5, 4096, 50_000_000])
def test_truncated_safetensors(tmp_path, weights_dir, keep_bytes):
    """The reference's users see a bare ``HeaderTooSmall``; ours are told the file is damaged."""
    target = tmp_path / CHECKPOINT_NAME
    with open(weights_dir / CHECKPOINT_NAME, "rb") as src, open(target, "wb") as dst:
        dst.write(src.read(keep_bytes))
    with pytest.raises(CheckpointError, match="truncated or corrupt") as err:
        load_sadtalker(target)
    assert "725,066,984 bytes" in str(err.value) and OFFICIAL_FILES[CHECKPOINT_NAME].url in str(err.value)


def _recon_only(weights_dir):
    full = load_file(str(weights_dir / CHECKPOINT_NAME))
    return {k: v for k, v in full.items() if k.startswith("face_3drecon.")}


def test_wrong_key_is_listed(tmp_path, weights_dir):
    state = _recon_only(weights_dir)
    state["face_3drecon.final_layers.7.weight"] = state.pop("face_3drecon.final_layers.6.weight")
    save_file(state, str(tmp_path / CHECKPOINT_NAME))
    with pytest.raises(CheckpointError) as err:
        load_sadtalker(tmp_path / CHECKPOINT_NAME)
    message = str(err.value)
    assert "1 missing keys: face_3drecon.final_layers.6.weight" in message
    assert "1 unexpected keys: face_3drecon.final_layers.7.weight" in message


def test_wrong_shape_is_listed(tmp_path, weights_dir):
    state = _recon_only(weights_dir)
    state["face_3drecon.final_layers.0.weight"] = torch.zeros(81, 2048, 1, 1)
    save_file(state, str(tmp_path / CHECKPOINT_NAME))
    with pytest.raises(CheckpointError, match=r"final_layers\.0\.weight: file \(81, 2048, 1, 1\) vs model \(80, 2048, 1, 1\)"):
        load_sadtalker(tmp_path / CHECKPOINT_NAME)


def test_file_without_sadtalker_prefixes(tmp_path):
    save_file({"model.weight": torch.zeros(2)}, str(tmp_path / CHECKPOINT_NAME))
    with pytest.raises(CheckpointError, match="not a SadTalker V0.0.2 file"):
        load_sadtalker(tmp_path / CHECKPOINT_NAME)


def test_256_file_asked_for_as_512(tmp_path):
    path = tmp_path / "SadTalker_V0.0.2_256.safetensors"
    path.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="256-pixel model but size 512"):
        load_sadtalker(path, size=512)


def _mapping_blob(weights_dir, name="mapping_00229-model.pth.tar"):
    return torch.load(weights_dir / name, weights_only=True)


def test_mapping_loads_strictly(weights_dir):
    blob = _mapping_blob(weights_dir)
    net = load_mapping(weights_dir / "mapping_00229-model.pth.tar")
    assert not net.training
    assert set(net.state_dict()) == set(blob["mapping"])
    assert torch.equal(net.state_dict()["fc_exp.weight"], blob["mapping"]["fc_exp.weight"])
    assert load_mapping(weights_dir / "mapping_00109-model.pth.tar").state_dict()["first.0.weight"].shape[1] == 73


def test_mapping_wrong_key_and_shape(tmp_path, weights_dir):
    blob = _mapping_blob(weights_dir)
    blob["mapping"]["fc_yawn.weight"] = blob["mapping"].pop("fc_yaw.weight")
    blob["mapping"]["fc_t.bias"] = torch.zeros(4)
    torch.save(blob, tmp_path / "mapping_00229-model.pth.tar")
    with pytest.raises(CheckpointError) as err:
        load_mapping(tmp_path / "mapping_00229-model.pth.tar")
    message = str(err.value)
    assert "missing keys: mapping.fc_yaw.weight" in message
    assert "unexpected keys: mapping.fc_yawn.weight" in message
    assert "mapping.fc_t.bias: file (4,) vs model (3,)" in message


def test_mapping_files_swapped(tmp_path, weights_dir):
    shutil.copy(weights_dir / "mapping_00109-model.pth.tar", tmp_path / "mapping_00229-model.pth.tar")
    with pytest.raises(CheckpointError, match="should take 70 coefficients but this file takes 73"):
        load_mapping(tmp_path / "mapping_00229-model.pth.tar")


def test_mapping_truncated_and_not_a_mapping(tmp_path, weights_dir):
    data = (weights_dir / "mapping_00229-model.pth.tar").read_bytes()
    (tmp_path / "mapping_00229-model.pth.tar").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_mapping(tmp_path / "mapping_00229-model.pth.tar")
    torch.save({"model": {}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="no 'mapping' entry"):
        load_mapping(tmp_path / "other.pth")


class _Payload:
    """Unpickling this would run code; weights_only loading must refuse it."""

    def __reduce__(self):
        return (print, ("checkpoint code ran",))


def test_pickle_with_code_is_refused(tmp_path, capsys):
    path = tmp_path / "mapping_00229-model.pth.tar"
    torch.save({"mapping": {"x": torch.zeros(1)}, "evil": _Payload()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_mapping(path)
    assert "checkpoint code ran" not in capsys.readouterr().out
