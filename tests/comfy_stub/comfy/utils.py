"""Stand-in for ``comfy.utils.ProgressBar``: records every update so tests can inspect it."""

from __future__ import annotations

updates: list[tuple[int, int]] = []
#: (value, total, format, size of the image, max side) of every update that carried a preview image
previews: list[tuple[int, int, str, tuple[int, int], int]] = []


class ProgressBar:
    def __init__(self, total: int, node_id=None):
        self.total = total
        self.current = 0

    def update_absolute(self, value: int, total: int | None = None, preview=None) -> None:
        if total is not None:
            self.total = total
        self.current = value
        updates.append((value, self.total))
        if preview is not None:
            kind, image, max_side = preview   # what ComfyUI's progress hook expects: ("JPEG", PIL image, size)
            previews.append((value, self.total, kind, image.size, max_side))

    def update(self, value: int) -> None:
        self.update_absolute(self.current + value, self.total)
