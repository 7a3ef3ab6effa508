"""The "SadTalker Render to Video" node over the comfy stand-in: it outputs ComfyUI's native VIDEO
(comfy_api.input_impl.VideoFromFile) that core Save Video can copy, with every frame and the audio."""

from __future__ import annotations

import os

import pytest

from test_nodes import coefficients, comfy_base, face, model, nodes, pack  # noqa: F401 - shared fixtures
from sadtalker_models.video import probe, read_video


@pytest.fixture(scope="module")
def video_out(nodes, model, face, coefficients):  # noqa: F811
    import comfy.utils

    comfy.utils.updates.clear()
    comfy.utils.previews.clear()
    out = nodes["SadTalkerRenderVideo"]().render(model, face[0], coefficients["result"][0], 1.0, 1, True)
    return out, list(comfy.utils.updates), list(comfy.utils.previews)


def test_node_is_registered_with_its_display_name(pack):  # noqa: F811
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["SadTalkerRenderVideo"] == "SadTalker Render to Video"
    types = pack.NODE_CLASS_MAPPINGS["SadTalkerRenderVideo"].INPUT_TYPES()
    assert types["optional"]["face_restorer"][0] == "SADTALKER_FACE_RESTORER"
    assert pack.NODE_CLASS_MAPPINGS["SadTalkerRenderVideo"].RETURN_TYPES == ("VIDEO",)


def test_render_to_video_outputs_a_native_video_save_video_can_write(video_out, coefficients, tmp_path):  # noqa: F811
    from comfy_api.input_impl import VideoFromFile

    out, updates, previews = video_out
    (video,) = out["result"]
    frames = coefficients["result"][0].num_frames
    # live preview: each batch's newest frame rides on the progress bar while the video renders
    assert [p[:3] for p in previews] == [(i, frames, "JPEG") for i in range(1, frames + 1)]
    assert isinstance(video, VideoFromFile)
    assert video.get_frame_count() == frames
    assert float(video.get_frame_rate()) == 25.0
    assert video.get_duration() == pytest.approx(frames / 25.0, abs=0.03)
    assert updates[-1] == (frames, frames)
    # what core Save Video does with format/codec auto
    saved = tmp_path / "ComfyUI_00001_.mp4"
    video.save_to(str(saved))
    info = probe(saved)
    assert info.audio and info.sample_rate
    assert (info.width, info.height) == video.get_dimensions()
    assert sum(1 for _ in read_video(saved)[0]) == frames
    # a 256 px video is its own preview
    import folder_paths

    (entry,) = out["ui"]["sadtalker_video"]
    assert entry["type"] == "temp" and entry["format"] == "video/mp4"
    shown = os.path.join(folder_paths.get_temp_directory(), entry["subfolder"], entry["filename"])
    assert os.path.samefile(shown, video.get_stream_source())


def test_render_to_video_refuses_a_wrong_restorer(nodes, model, face, coefficients):  # noqa: F811
    with pytest.raises(ValueError, match="Face Restore Model Loader"):
        nodes["SadTalkerRenderVideo"]().render(model, face[0], coefficients["result"][0], 1.0, 1, True,
                                               face_restorer="GFPGANv1.4.pth")
