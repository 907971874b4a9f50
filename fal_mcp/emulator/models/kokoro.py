"""``fal-ai/kokoro/american-english``: text-to-speech with Kokoro's real schema; returns a real WAV file.

Each word becomes a tone burst (pitch from the voice and the word, length from the word and ``speed``),
so the audio's length follows the text. The text rides along in the WAV's ``INFO/ICMT`` chunk, which is
how the emulator's speech-to-text model "hears" it back.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import anyio

from fal_mcp.emulator.models.base import DocumentModel, RunContext, error_detail, validation_error
from fal_mcp.emulator.models.imaging import check_prompt
from fal_mcp.emulator.models.media import silence, tone, wav

RATE = 24_000  # Kokoro's sample rate
SECONDS_PER_LETTER = 0.06
PAUSE_SECONDS = 0.08


def speak(text: str, voice: str, speed: float) -> bytes:
    """PCM of ``text`` read by ``voice``: one tone burst per word, a short pause between words."""
    base = 160.0 + int(hashlib.sha256(voice.encode()).hexdigest(), 16) % 120
    parts: list[bytes] = []
    for word in text.split():
        pitch = base * (1 + (int(hashlib.sha256(word.lower().encode()).hexdigest(), 16) % 7) / 12)
        parts.append(tone(pitch, max(0.1, len(word) * SECONDS_PER_LETTER) / speed, RATE))
        parts.append(silence(PAUSE_SECONDS / speed, RATE))
    return b"".join(parts)


class KokoroAmericanEnglish(DocumentModel):
    endpoint_id: ClassVar[str] = "fal-ai/kokoro/american-english"

    async def run(self, data: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        text: str = data["prompt"]
        if not text.strip():
            raise validation_error(
                error_detail("value_error", "Value error, prompt must not be empty", ["body", "prompt"], input=text)
            )
        check_prompt(ctx, text)
        await ctx.log(f"Synthesising {len(text)} characters with voice {data['voice']}")
        await ctx.sleep(0.2 + len(text) / 500)
        pcm = await anyio.to_thread.run_sync(speak, text, data["voice"], data["speed"])
        audio = wav(pcm, RATE, comment=text)
        return {"audio": await ctx.store(audio, "audio/wav", f"kokoro-{data['voice']}.wav")}

    def billable_units(self, data: dict[str, Any], output: dict[str, Any]) -> float:
        return len(data["prompt"]) / 1000  # fal's unit: 1000 characters
