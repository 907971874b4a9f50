"""A still picture of an output file for its preview: images as they are, a video's poster frame.

Video posters need PyAV (the ``media`` extra); without it videos simply get no preview. The frame is taken
about a third of the way in (first frames are often black) and its size is checked before decoding.
"""

from __future__ import annotations

import importlib.util
import io

MAX_VIDEO_PIXELS = 40_000_000  # larger frames are not decoded for a preview


def previewable(content_type: str | None) -> bool:
    kind = content_type or ""
    return kind.startswith("image/") or (kind.startswith("video/") and importlib.util.find_spec("av") is not None)


def still_image(data: bytes, content_type: str | None) -> bytes:
    """``data`` itself for an image; for a video, one decoded frame as PNG. ValueError when there is none."""
    if not (content_type or "").startswith("video/"):
        return data
    import av

    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            if stream.codec_context.width * stream.codec_context.height > MAX_VIDEO_PIXELS:
                raise ValueError("video frames too large to preview")
            if container.duration:  # type: ignore[union-attr]
                container.seek(container.duration // 3, backward=True, any_frame=False)  # type: ignore[union-attr]
            frame = next(container.decode(stream), None)  # type: ignore[union-attr]
            if frame is None:
                raise ValueError("no decodable frame")
            buffer = io.BytesIO()
            frame.to_image().save(buffer, format="PNG")
            return buffer.getvalue()
    except av.FFmpegError as exc:
        raise ValueError(f"undecodable video: {exc}") from exc
