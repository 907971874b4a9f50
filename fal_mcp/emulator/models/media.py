"""Real media files for the emulator's audio and video models: WAV with the standard library, MP4 with PyAV.

PyAV (``pip install 'fal-mcp[media]'``) is optional: without it the video model is listed as not runnable
offline and non-WAV audio cannot be read. It is imported only when a video or audio file is made or read.
"""

from __future__ import annotations

import array
import importlib.util
import io
import math
import struct
import wave
from collections.abc import Callable

from PIL import Image

MEDIA_EXTRA_HINT = "it needs PyAV, which the media extra installs: pip install 'fal-mcp[media]'"
WAV_COMMENT_ID = b"ICMT"


def have_pyav() -> bool:
    return importlib.util.find_spec("av") is not None


def tone(frequency: float, seconds: float, rate: int, volume: float = 0.3) -> bytes:
    """A sine tone as mono 16-bit PCM: one period computed, then repeated (fast enough for minutes of audio)."""
    count = max(1, int(seconds * rate))
    period = max(2, round(rate / frequency))
    cycle = array.array("h", (int(volume * 32767 * math.sin(2 * math.pi * i / period)) for i in range(period)))
    whole = cycle.tobytes() * (count // period + 1)
    return whole[: count * 2]


def silence(seconds: float, rate: int) -> bytes:
    return bytes(2 * int(seconds * rate))


def wav(pcm: bytes, rate: int, comment: str | None = None) -> bytes:
    """A mono 16-bit WAV file; ``comment`` goes into a RIFF ``LIST/INFO/ICMT`` chunk (players ignore it)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)
    data = buffer.getvalue()
    if comment is None:
        return data
    text = comment.encode() + b"\0"
    if len(text) % 2:
        text += b"\0"
    info = b"INFO" + WAV_COMMENT_ID + struct.pack("<I", len(text)) + text
    chunk = b"LIST" + struct.pack("<I", len(info)) + info
    return b"RIFF" + struct.pack("<I", len(data) - 8 + len(chunk)) + data[8:] + chunk


def wav_comment(data: bytes) -> str | None:
    """The ``ICMT`` text of a WAV made by :func:`wav`, if any."""
    at = data.find(b"INFO" + WAV_COMMENT_ID)
    if not data.startswith(b"RIFF") or at < 0:
        return None
    (size,) = struct.unpack_from("<I", data, at + 8)
    return data[at + 12 : at + 12 + size].rstrip(b"\0").decode(errors="replace")


def audio_duration(data: bytes) -> float:
    """Seconds of audio in a WAV (standard library) or any format PyAV decodes; ValueError if unreadable."""
    if data.startswith(b"RIFF"):
        try:
            with wave.open(io.BytesIO(data)) as audio:
                return audio.getnframes() / audio.getframerate()
        except (wave.Error, EOFError) as exc:
            raise ValueError(f"not a readable WAV file: {exc}") from exc
    if not have_pyav():
        raise ValueError(f"only WAV can be read here; {MEDIA_EXTRA_HINT}")
    import av

    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.audio:
                raise ValueError("no audio stream")
            if container.duration:  # type: ignore[union-attr]
                return container.duration / 1_000_000  # type: ignore[union-attr]
            stream = container.streams.audio[0]
            return sum(frame.samples for frame in container.decode(stream)) / (stream.rate or 1)  # type: ignore[union-attr, misc]
    except av.FFmpegError as exc:
        raise ValueError(f"not a readable audio file: {exc}") from exc


def mp4(
    frame: Callable[[int], Image.Image],
    *,
    width: int,
    height: int,
    fps: int,
    seconds: float,
    audio: Callable[[int], bytes] | None = None,
    audio_rate: int = 44_100,
) -> bytes:
    """An H.264 MP4 (yuv420p, plays everywhere) of ``frame(i)`` pictures, with an AAC track of ``audio(rate)``
    (mono 16-bit PCM)."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast", "crf": "28"}
        sound = container.add_stream("aac", rate=audio_rate) if audio is not None else None
        if sound is not None:
            sound.layout = "mono"
        for index in range(max(1, round(seconds * fps))):
            for packet in video.encode(av.VideoFrame.from_image(frame(index))):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if sound is not None and audio is not None:
            pcm = audio(audio_rate)
            chunk = av.AudioFrame(format="s16", layout="mono", samples=len(pcm) // 2)
            chunk.planes[0].update(pcm)
            chunk.sample_rate = audio_rate
            for packet in sound.encode(chunk):
                container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)
    return buffer.getvalue()
