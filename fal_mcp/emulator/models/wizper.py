"""``fal-ai/wizper``: speech-to-text with Wizper's real schema; returns text, timestamped chunks and languages.

There is no recogniser offline: audio made by the emulator's text-to-speech model carries its text (see
``kokoro.py``) and is "heard" back; any other audio gets deterministic words. Chunks always span the
audio's real duration (WAV read with the standard library, other formats with PyAV).
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

from fal_mcp.emulator.models.base import DocumentModel, RunContext, error_detail, validation_error
from fal_mcp.emulator.models.llm import VOCABULARY
from fal_mcp.emulator.models.media import audio_duration, wav_comment

WORDS_PER_SECOND = 2.5
WORDS_PER_SEGMENT = 8


def words_for(data: bytes, seconds: float) -> list[str]:
    """What the emulator "hears": the text a WAV carries, else seeded words (about 2.5 per second)."""
    if (text := wav_comment(data)) is not None:
        return text.split()
    digest = hashlib.sha256(data).digest()
    count = max(1, round(seconds * WORDS_PER_SECOND))
    return [VOCABULARY[digest[i % len(digest)] % len(VOCABULARY)] for i in range(count)]


def chunks(words: list[str], seconds: float, *, max_segment: float, merge: bool) -> list[dict[str, Any]]:
    """Segments of ``WORDS_PER_SEGMENT`` words over the audio's duration (words spread evenly); with
    ``merge``, consecutive ones joined while the result lasts at most ``max_segment`` seconds."""
    per_word = seconds / len(words) if words else 0.0
    segments: list[tuple[int, int]] = []
    for start in range(0, len(words), WORDS_PER_SEGMENT):
        end = min(len(words), start + WORDS_PER_SEGMENT)
        if merge and segments and (end - segments[-1][0]) * per_word <= max_segment:
            segments[-1] = (segments[-1][0], end)
        else:
            segments.append((start, end))
    return [
        {"timestamp": [round(start * per_word, 2), round(end * per_word, 2)], "text": " ".join(words[start:end])}
        for start, end in segments
    ]


class Wizper(DocumentModel):
    endpoint_id: ClassVar[str] = "fal-ai/wizper"

    async def run(self, data: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        url: str = data["audio_url"]
        raw, _ = await ctx.fetch(url, "audio_url")
        try:
            seconds = audio_duration(raw)
        except ValueError as exc:
            raise validation_error(
                error_detail(
                    "audio_load_error", f"Failed to load the audio: {exc}", ["body", "audio_url"], input=url[:200]
                )
            ) from exc
        await ctx.log(f"Transcribing {seconds:.1f} s of audio")
        await ctx.sleep(0.1 + seconds / 20)
        words = words_for(raw, seconds)
        language = data.get("language") or "en"
        if data["task"] == "translate":
            language = "en"
        return {
            "text": " ".join(words),
            "chunks": chunks(words, seconds, max_segment=data["max_segment_len"], merge=data["merge_chunks"]),
            "languages": [language],
        }

    def billable_units(self, data: dict[str, Any], output: dict[str, Any]) -> float:
        ends = [chunk["timestamp"][1] for chunk in output["chunks"]]
        return round(0.1 + (max(ends) if ends else 0.0) / 20, 3)  # compute seconds, as slept
