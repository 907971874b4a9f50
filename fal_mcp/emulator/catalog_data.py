"""The emulator's model catalog: the built-in models plus catalog-only entries for real fal endpoints.

Catalog-only entries make search, paging, pricing and per-model OpenAPI meaningful: each has real-looking
metadata, a price and a plausible schema. They cannot be run (the queue answers fal's 404 for an
unknown app); their tags say ``emulated`` and ``catalog-only``. Prices are illustrative, not fal's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from fal_mcp.emulator.models.base import ModelInfo
from fal_mcp.emulator.models.imaging import IMAGE_COMPONENTS, image_size_property, images_output_schema

if TYPE_CHECKING:
    from fal_mcp.emulator.state import EmulatorState

BUILTIN_DATE = "2024-08-01T00:00:00Z"


class CatalogModel(Protocol):
    """What the catalog, pricing and OpenAPI routes need of a model (built-in or catalog-only)."""

    info: ModelInfo
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    components: dict[str, dict[str, Any]]
    supports_stream: bool


@dataclass(frozen=True)
class CatalogEntry:
    """A catalog-only model: metadata and schemas, nothing to run."""

    info: ModelInfo
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    components: dict[str, dict[str, Any]] = field(default_factory=dict)
    date: str = BUILTIN_DATE
    license_type: str = "commercial"
    related: tuple[str, ...] = ()  # training ↔ inference endpoint ids
    supports_stream: bool = False


# -- shared schema pieces ------------------------------------------------------------------------

FILE_COMPONENT: dict[str, Any] = {
    "title": "File",
    "type": "object",
    "x-fal-order-properties": ["url", "content_type", "file_name", "file_size"],
    "properties": {
        "url": {"title": "Url", "type": "string", "description": "The URL where the file can be downloaded from."},
        "content_type": {"title": "Content Type", "type": "string", "description": "The mime type of the file."},
        "file_name": {"title": "File Name", "type": "string", "description": "The name of the file."},
        "file_size": {"title": "File Size", "type": "integer", "description": "The size of the file in bytes."},
    },
    "required": ["url"],
}
FILE_COMPONENTS = {"File": FILE_COMPONENT}


def _prop(kind: str, title: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"title": title, "type": kind, "description": description, **extra}


def _object(title: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "title": title,
        "type": "object",
        "x-fal-order-properties": list(properties),
        "properties": properties,
        "required": required,
    }


PROMPT = _prop("string", "Prompt", "The prompt to generate from.", examples=["A lighthouse on a cliff at dusk"])
SEED = _prop("integer", "Seed", "Same seed and prompt give the same result.")
SAFETY = _prop("boolean", "Enable Safety Checker", "If set to true, the safety checker will be enabled.", default=True)
IMAGE_URL = _prop("string", "Image Url", "URL of the input image.", examples=["https://v3.fal.media/files/in.png"])
FILE_OUT = {"$ref": "#/components/schemas/File"}


def text_to_image(*, max_images: int = 4, steps: int | None = 28) -> dict[str, Any]:
    properties: dict[str, Any] = {"prompt": PROMPT, "image_size": image_size_property("landscape_4_3")}
    if steps is not None:
        properties["num_inference_steps"] = _prop(
            "integer", "Num Inference Steps", "Denoising steps.", default=steps, minimum=1, maximum=50
        )
    properties |= {
        "seed": SEED,
        "num_images": _prop("integer", "Num Images", "Images to generate.", default=1, minimum=1, maximum=max_images),
        "enable_safety_checker": SAFETY,
        "output_format": _prop("string", "Output Format", "Image format.", enum=["jpeg", "png"], default="jpeg"),
    }
    return _object("TextToImageInput", properties, ["prompt"])


def image_edit(*, strength: bool = False) -> dict[str, Any]:
    properties: dict[str, Any] = {"prompt": PROMPT, "image_url": IMAGE_URL}
    if strength:
        properties["strength"] = _prop(
            "number", "Strength", "How much to change the input.", default=0.85, minimum=0.01, maximum=1
        )
    properties |= {
        "seed": SEED,
        "num_images": _prop("integer", "Num Images", "Images.", default=1, minimum=1, maximum=4),
    }
    return _object("ImageToImageInput", properties, ["prompt", "image_url"])


def single_image_input() -> dict[str, Any]:
    return _object(
        "ImageInput",
        {"image_url": IMAGE_URL, "sync_mode": _prop("boolean", "Sync Mode", "", default=False)},
        ["image_url"],
    )


def video_input(*, image: bool, durations: list[str], aspect: bool = True) -> dict[str, Any]:
    properties: dict[str, Any] = {"prompt": PROMPT}
    if image:
        properties["image_url"] = IMAGE_URL
    properties["duration"] = _prop(
        "string", "Duration", "Video length in seconds.", enum=durations, default=durations[0]
    )
    if aspect:
        properties["aspect_ratio"] = _prop(
            "string", "Aspect Ratio", "Frame aspect ratio.", enum=["16:9", "9:16", "1:1"], default="16:9"
        )
    properties |= {
        "negative_prompt": _prop("string", "Negative Prompt", "What to avoid.", default="blur, distort, low quality"),
        "seed": SEED,
    }
    return _object("VideoInput", properties, ["prompt", "image_url"] if image else ["prompt"])


VIDEO_OUTPUT = _object("VideoOutput", {"video": {**FILE_OUT, "description": "The generated video."}}, ["video"])
AUDIO_OUTPUT = _object("AudioOutput", {"audio": {**FILE_OUT, "description": "The generated audio."}}, ["audio"])
MESH_OUTPUT = _object(
    "MeshOutput",
    {"model_mesh": {**FILE_OUT, "description": "The generated 3D model (GLB)."}, "seed": SEED},
    ["model_mesh"],
)


def tts_input(voices: list[str]) -> dict[str, Any]:
    return _object(
        "TextToSpeechInput",
        {
            "text": _prop("string", "Text", "Text to speak.", examples=["Hello from the emulator."], maxLength=5000),
            "voice": _prop("string", "Voice", "Voice to use.", enum=voices, default=voices[0]),
            "speed": _prop("number", "Speed", "Speaking rate.", default=1.0, minimum=0.5, maximum=2.0),
        },
        ["text"],
    )


STT_INPUT = _object(
    "SpeechToTextInput",
    {
        "audio_url": _prop("string", "Audio Url", "URL of the audio to transcribe."),
        "task": _prop(
            "string", "Task", "Transcribe or translate.", enum=["transcribe", "translate"], default="transcribe"
        ),
        "language": _prop("string", "Language", "Language code; detected when omitted."),
    },
    ["audio_url"],
)
STT_OUTPUT = _object(
    "SpeechToTextOutput",
    {
        "text": _prop("string", "Text", "The transcription."),
        "chunks": {
            "title": "Chunks",
            "type": "array",
            "items": {"type": "object"},
            "description": "Timestamped chunks.",
        },
    },
    ["text"],
)
AUDIO_GEN_INPUT = _object(
    "TextToAudioInput",
    {
        "prompt": PROMPT,
        "duration": _prop("number", "Duration", "Seconds of audio.", default=8, minimum=1, maximum=47),
        "seed": SEED,
    },
    ["prompt"],
)
MESH_INPUT = _object(
    "ImageTo3DInput",
    {
        "input_image_url": IMAGE_URL,
        "seed": SEED,
        "num_inference_steps": _prop("integer", "Num Inference Steps", "Steps.", default=50, minimum=1, maximum=50),
        "textured_mesh": _prop("boolean", "Textured Mesh", "Generate a textured mesh.", default=False),
    },
    ["input_image_url"],
)
TRAINING_INPUT = _object(
    "TrainingInput",
    {
        "images_data_url": _prop("string", "Images Data Url", "URL of a zip archive of training images."),
        "trigger_word": _prop("string", "Trigger Word", "Word that triggers the trained concept."),
        "steps": _prop("integer", "Steps", "Training steps.", default=1000, minimum=1, maximum=10000),
        "is_style": _prop("boolean", "Is Style", "Train a style rather than a subject.", default=False),
    },
    ["images_data_url"],
)
TRAINING_OUTPUT = _object(
    "TrainingOutput",
    {
        "diffusers_lora_file": {**FILE_OUT, "description": "The trained LoRA weights."},
        "config_file": {**FILE_OUT, "description": "The training configuration."},
    },
    ["diffusers_lora_file", "config_file"],
)
LLM_INPUT = _object(
    "ChatInput",
    {
        "prompt": PROMPT,
        "system_prompt": _prop("string", "System Prompt", "Instructions for the model."),
        "model": _prop("string", "Model", "Which LLM to route to.", default="google/gemini-2.5-flash"),
        "max_tokens": _prop("integer", "Max Tokens", "Upper bound on generated tokens.", minimum=1),
    },
    ["prompt"],
)
VISION_INPUT = _object(
    "VisionChatInput",
    {
        **LLM_INPUT["properties"],
        "image_urls": {"title": "Image Urls", "type": "array", "items": {"type": "string"}, "description": "Images."},
    },
    ["prompt", "image_urls"],
)
LLM_OUTPUT = _object(
    "ChatOutput",
    {
        "output": _prop("string", "Output", "Generated text."),
        "partial": _prop("boolean", "Partial", "Whether this is a partial result.", default=False),
        "error": _prop("string", "Error", "Error message, if any."),
    },
    ["output"],
)

IMAGES_OUT = images_output_schema("Output")


def _refs(schema: Any) -> set[str]:
    """Names of every ``#/components/schemas/<Name>`` a schema points at."""
    if isinstance(schema, dict):
        found = {schema["$ref"].rsplit("/", 1)[-1]} if isinstance(schema.get("$ref"), str) else set()
        return found.union(*(_refs(value) for value in schema.values()))
    if isinstance(schema, list):
        return set().union(*(_refs(value) for value in schema))
    return set()


def _entry(
    endpoint_id: str,
    display_name: str,
    category: str,
    description: str,
    tags: tuple[str, ...],
    price: float,
    unit: str,
    inputs: dict[str, Any],
    outputs: dict[str, Any],
    *,
    date: str,
    status: str = "active",
    kind: str = "inference",
    minutes: float | None = None,
    license_type: str = "commercial",
    related: tuple[str, ...] = (),
) -> CatalogEntry:
    used = _refs(inputs) | _refs(outputs)
    components = {name: schema for name, schema in {**IMAGE_COMPONENTS, **FILE_COMPONENTS}.items() if name in used}
    info = ModelInfo(
        endpoint_id=endpoint_id,
        display_name=display_name,
        category=category,
        description=description,
        tags=(*tags, "emulated", "catalog-only"),
        unit_price=price,
        unit=unit,
        kind=kind,
        duration_estimate=minutes,
        status=status,
    )
    return CatalogEntry(info, inputs, outputs, components, date, license_type, related)


T2I, I2I, I2V, T2V = "text-to-image", "image-to-image", "image-to-video", "text-to-video"
TTS, STT, T2A, I23D, TRAIN, LLM = "text-to-speech", "speech-to-text", "text-to-audio", "image-to-3d", "training", "llm"
D5_10 = ["5", "10"]

CATALOG_ONLY: tuple[CatalogEntry, ...] = (
    # text-to-image
    _entry(
        "fal-ai/flux-pro/v1.1-ultra",
        "FLUX1.1 [pro] ultra",
        T2I,
        "FLUX1.1 [pro] in ultra mode: up to 2K images with improved photo realism.",
        ("pro", "realism"),
        0.06,
        "image",
        text_to_image(steps=None),
        IMAGES_OUT,
        date="2024-11-06T00:00:00Z",
        minutes=0.2,
    ),
    _entry(
        "fal-ai/flux-pro/v1.1",
        "FLUX1.1 [pro]",
        T2I,
        "Faster, better FLUX Pro: superior composition and prompt following.",
        ("pro",),
        0.04,
        "megapixel",
        text_to_image(steps=None),
        IMAGES_OUT,
        date="2024-10-02T00:00:00Z",
        minutes=0.1,
    ),
    _entry(
        "fal-ai/flux/schnell",
        "FLUX.1 [schnell]",
        T2I,
        "FLUX.1 [schnell]: a 12B flow transformer that makes images in 1 to 4 steps.",
        ("fast", "turbo"),
        0.003,
        "megapixel",
        text_to_image(steps=4),
        IMAGES_OUT,
        date="2024-08-01T00:00:00Z",
        minutes=0.02,
        license_type="commercial",
    ),
    _entry(
        "fal-ai/flux-lora",
        "FLUX.1 [dev] with LoRAs",
        T2I,
        "Super fast FLUX.1 [dev] inference with LoRA adapters for personalised styles and subjects.",
        ("lora", "personalization"),
        0.035,
        "megapixel",
        text_to_image(),
        IMAGES_OUT,
        date="2024-08-10T00:00:00Z",
        minutes=0.1,
        license_type="research",
        related=("fal-ai/flux-lora-fast-training",),
    ),
    _entry(
        "fal-ai/recraft/v3/text-to-image",
        "Recraft V3",
        T2I,
        "Recraft V3 generates vector art, brand-style images and long texts in images.",
        ("vector", "typography"),
        0.04,
        "image",
        text_to_image(steps=None),
        IMAGES_OUT,
        date="2024-10-30T00:00:00Z",
        minutes=0.2,
    ),
    _entry(
        "fal-ai/ideogram/v3",
        "Ideogram V3",
        T2I,
        "Ideogram V3: photorealistic images with excellent text rendering.",
        ("typography", "new"),
        0.06,
        "image",
        text_to_image(steps=None),
        IMAGES_OUT,
        date="2025-03-27T00:00:00Z",
        minutes=0.3,
    ),
    _entry(
        "fal-ai/imagen4/preview",
        "Imagen 4",
        T2I,
        "Google's Imagen 4: fine detail, natural lighting and accurate text.",
        ("google", "realism"),
        0.05,
        "image",
        text_to_image(steps=None),
        IMAGES_OUT,
        date="2025-05-20T00:00:00Z",
        minutes=0.3,
    ),
    _entry(
        "fal-ai/bytedance/seedream/v4/text-to-image",
        "Bytedance Seedream 4.0",
        T2I,
        "Seedream 4.0 unifies image generation and editing in one 4K-capable model.",
        ("bytedance", "4k"),
        0.03,
        "image",
        text_to_image(max_images=6, steps=None),
        IMAGES_OUT,
        date="2025-09-09T00:00:00Z",
        minutes=0.3,
    ),
    _entry(
        "fal-ai/qwen-image",
        "Qwen Image",
        T2I,
        "Qwen-Image: a 20B foundation model strong at complex text rendering.",
        ("qwen", "typography"),
        0.02,
        "megapixel",
        text_to_image(steps=30),
        IMAGES_OUT,
        date="2025-08-04T00:00:00Z",
        minutes=0.2,
    ),
    _entry(
        "fal-ai/stable-diffusion-v35-large",
        "Stable Diffusion 3.5 Large",
        T2I,
        "SD 3.5 Large: an MMDiT model with improved typography and prompt understanding.",
        ("stability",),
        0.065,
        "image",
        text_to_image(),
        IMAGES_OUT,
        date="2024-10-22T00:00:00Z",
        minutes=0.2,
        license_type="research",
    ),
    _entry(
        "fal-ai/flux-pro",
        "FLUX.1 [pro]",
        T2I,
        "The original FLUX.1 [pro]; superseded by FLUX1.1 [pro].",
        ("pro",),
        0.05,
        "megapixel",
        text_to_image(steps=None),
        IMAGES_OUT,
        date="2024-08-01T00:00:00Z",
        status="deprecated",
        minutes=0.2,
    ),
    _entry(
        "fal-ai/fast-sdxl",
        "Fast SDXL",
        T2I,
        "Stable Diffusion XL, optimised for speed.",
        ("sdxl", "fast"),
        0.002,
        "image",
        text_to_image(steps=25),
        IMAGES_OUT,
        date="2023-11-01T00:00:00Z",
        status="deprecated",
        minutes=0.05,
    ),
    # image-to-image
    _entry(
        "fal-ai/flux-pro/kontext",
        "FLUX.1 Kontext [pro]",
        I2I,
        "Edit images with text: targeted local edits and whole-scene changes.",
        ("editing", "pro"),
        0.04,
        "image",
        image_edit(),
        IMAGES_OUT,
        date="2025-05-29T00:00:00Z",
        minutes=0.2,
    ),
    _entry(
        "fal-ai/nano-banana/edit",
        "Nano Banana",
        I2I,
        "Google's state-of-the-art image editing model.",
        ("editing", "google"),
        0.039,
        "image",
        image_edit(),
        IMAGES_OUT,
        date="2025-08-26T00:00:00Z",
        minutes=0.2,
    ),
    _entry(
        "fal-ai/clarity-upscaler",
        "Clarity Upscaler",
        I2I,
        "High-fidelity upscaling that adds detail while keeping the original look.",
        ("upscaling",),
        0.03,
        "megapixel",
        image_edit(strength=True),
        IMAGES_OUT,
        date="2024-05-01T00:00:00Z",
        minutes=0.5,
    ),
    _entry(
        "fal-ai/bria/background/remove",
        "Bria RMBG 2.0",
        I2I,
        "Remove the background from an image; trained on licensed data.",
        ("background-removal", "utility"),
        0.018,
        "image",
        single_image_input(),
        _object("BackgroundRemovalOutput", {"image": {"$ref": "#/components/schemas/Image"}}, ["image"]),
        date="2024-11-01T00:00:00Z",
        minutes=0.05,
    ),
    # image-to-video
    _entry(
        "fal-ai/kling-video/v2.1/pro/image-to-video",
        "Kling 2.1 (pro)",
        I2V,
        "Kling 2.1 Pro: professional image-to-video with enhanced visual fidelity and motion.",
        ("motion", "pro"),
        0.09,
        "second",
        video_input(image=True, durations=D5_10, aspect=False),
        VIDEO_OUTPUT,
        date="2025-05-29T00:00:00Z",
        minutes=4.0,
    ),
    _entry(
        "fal-ai/kling-video/v2.1/standard/image-to-video",
        "Kling 2.1 (standard)",
        I2V,
        "Kling 2.1 Standard: cost-efficient image-to-video.",
        ("motion",),
        0.05,
        "second",
        video_input(image=True, durations=D5_10, aspect=False),
        VIDEO_OUTPUT,
        date="2025-05-29T00:00:00Z",
        minutes=3.0,
    ),
    _entry(
        "fal-ai/minimax/hailuo-02/standard/image-to-video",
        "MiniMax Hailuo 02 (standard)",
        I2V,
        "Hailuo-02: 768p image-to-video with strong physics.",
        ("minimax", "motion"),
        0.045,
        "second",
        video_input(image=True, durations=["6", "10"], aspect=False),
        VIDEO_OUTPUT,
        date="2025-06-18T00:00:00Z",
        minutes=4.0,
    ),
    _entry(
        "fal-ai/wan/v2.2-a14b/image-to-video",
        "Wan 2.2 A14B Image to Video",
        I2V,
        "Wan 2.2: open video model, image-to-video at up to 720p.",
        ("open-source", "wan"),
        0.08,
        "second",
        video_input(image=True, durations=["5"]),
        VIDEO_OUTPUT,
        date="2025-07-28T00:00:00Z",
        minutes=2.0,
        license_type="commercial",
    ),
    _entry(
        "fal-ai/luma-dream-machine/ray-2/image-to-video",
        "Luma Ray 2",
        I2V,
        "Luma Ray 2: realistic visuals with natural, coherent motion.",
        ("luma",),
        0.5,
        "video",
        video_input(image=True, durations=["5", "9"]),
        VIDEO_OUTPUT,
        date="2025-01-23T00:00:00Z",
        minutes=3.0,
    ),
    _entry(
        "fal-ai/stable-video",
        "Stable Video Diffusion",
        I2V,
        "Stable Video Diffusion; superseded by newer video models.",
        ("stability",),
        0.075,
        "video",
        video_input(image=True, durations=["4"], aspect=False),
        VIDEO_OUTPUT,
        date="2023-12-01T00:00:00Z",
        status="deprecated",
        minutes=1.0,
        license_type="research",
    ),
    # text-to-video
    _entry(
        "fal-ai/wan/v2.2-a14b/text-to-video",
        "Wan 2.2 A14B Text to Video",
        T2V,
        "Wan 2.2: high-quality open text-to-video with cinematic control.",
        ("open-source", "wan"),
        0.08,
        "second",
        video_input(image=False, durations=["5"]),
        VIDEO_OUTPUT,
        date="2025-07-28T00:00:00Z",
        minutes=2.0,
    ),
    _entry(
        "fal-ai/veo3",
        "Veo 3",
        T2V,
        "Google's Veo 3: video with native audio, dialogue and sound effects.",
        ("google", "audio"),
        0.75,
        "second",
        video_input(image=False, durations=["8"]),
        VIDEO_OUTPUT,
        date="2025-05-20T00:00:00Z",
        minutes=3.0,
    ),
    _entry(
        "fal-ai/kling-video/v2.1/master/text-to-video",
        "Kling 2.1 Master",
        T2V,
        "Kling 2.1 Master: top-tier text-to-video with exceptional motion fluidity.",
        ("motion", "pro"),
        0.28,
        "second",
        video_input(image=False, durations=D5_10),
        VIDEO_OUTPUT,
        date="2025-05-29T00:00:00Z",
        minutes=6.0,
    ),
    _entry(
        "fal-ai/minimax/hailuo-02/pro/text-to-video",
        "MiniMax Hailuo 02 (pro)",
        T2V,
        "Hailuo-02 Pro: 1080p text-to-video.",
        ("minimax",),
        0.08,
        "second",
        video_input(image=False, durations=["6"]),
        VIDEO_OUTPUT,
        date="2025-06-18T00:00:00Z",
        minutes=5.0,
    ),
    _entry(
        "fal-ai/ltx-video-13b-distilled",
        "LTX Video 13B Distilled",
        T2V,
        "LTX Video 13B distilled: fast, long-form open video generation.",
        ("fast", "open-source"),
        0.04,
        "video",
        video_input(image=False, durations=["5"]),
        VIDEO_OUTPUT,
        date="2025-05-14T00:00:00Z",
        minutes=1.0,
    ),
    # text-to-speech
    _entry(
        "fal-ai/minimax/speech-02-hd",
        "MiniMax Speech-02 HD",
        TTS,
        "High-quality text-to-speech with voice cloning and emotion control.",
        ("minimax", "voice"),
        0.1,
        "1k_characters",
        tts_input(["Wise_Woman", "Friendly_Person", "Deep_Voice_Man"]),
        AUDIO_OUTPUT,
        date="2025-05-01T00:00:00Z",
        minutes=0.2,
    ),
    _entry(
        "fal-ai/elevenlabs/tts/multilingual-v2",
        "ElevenLabs TTS Multilingual v2",
        TTS,
        "ElevenLabs' most lifelike multilingual speech synthesis.",
        ("elevenlabs", "voice"),
        0.1,
        "1k_characters",
        tts_input(["Rachel", "Aria", "Roger"]),
        AUDIO_OUTPUT,
        date="2025-02-01T00:00:00Z",
        minutes=0.2,
    ),
    _entry(
        "fal-ai/kokoro/american-english",
        "Kokoro TTS (American English)",
        TTS,
        "Kokoro: a lightweight, fast open text-to-speech model.",
        ("open-source", "fast"),
        0.02,
        "1k_characters",
        tts_input(["af_heart", "af_bella", "am_adam"]),
        AUDIO_OUTPUT,
        date="2025-01-20T00:00:00Z",
        minutes=0.05,
    ),
    # speech-to-text
    _entry(
        "fal-ai/whisper",
        "Whisper",
        STT,
        "OpenAI Whisper: speech recognition and translation in many languages.",
        ("openai", "transcription"),
        0.00111,
        "compute_second",
        STT_INPUT,
        STT_OUTPUT,
        date="2023-10-01T00:00:00Z",
        minutes=0.5,
    ),
    _entry(
        "fal-ai/wizper",
        "Wizper (Whisper v3, fal-optimised)",
        STT,
        "Whisper v3 Large, optimised by fal for speed.",
        ("transcription", "fast"),
        0.0005,
        "compute_second",
        STT_INPUT,
        STT_OUTPUT,
        date="2024-06-01T00:00:00Z",
        minutes=0.2,
    ),
    # text-to-audio
    _entry(
        "fal-ai/stable-audio",
        "Stable Audio Open",
        T2A,
        "Open text-to-audio for samples, loops and sound effects.",
        ("stability", "sfx"),
        0.002,
        "second",
        AUDIO_GEN_INPUT,
        AUDIO_OUTPUT,
        date="2024-06-05T00:00:00Z",
        minutes=0.3,
        license_type="research",
    ),
    _entry(
        "fal-ai/lyria2",
        "Lyria 2",
        T2A,
        "Google's Lyria 2: high-fidelity music from text.",
        ("google", "music"),
        0.1,
        "request",
        AUDIO_GEN_INPUT,
        AUDIO_OUTPUT,
        date="2025-05-20T00:00:00Z",
        minutes=0.5,
    ),
    # image-to-3d
    _entry(
        "fal-ai/hunyuan3d-v21",
        "Hunyuan3D 2.1",
        I23D,
        "Hunyuan3D 2.1: production-ready 3D assets with PBR textures from one image.",
        ("3d", "tencent"),
        0.3,
        "request",
        MESH_INPUT,
        MESH_OUTPUT,
        date="2025-06-13T00:00:00Z",
        minutes=1.0,
    ),
    _entry(
        "fal-ai/trellis",
        "Trellis",
        I23D,
        "Trellis: fast, high-quality 3D asset generation from an image.",
        ("3d", "fast"),
        0.02,
        "request",
        MESH_INPUT,
        MESH_OUTPUT,
        date="2024-12-10T00:00:00Z",
        minutes=0.5,
    ),
    # training
    _entry(
        "fal-ai/flux-lora-fast-training",
        "Train FLUX LoRA",
        TRAIN,
        "Train a FLUX.1 [dev] LoRA of a subject or style from a few images, fast.",
        ("lora", "training"),
        2.0,
        "request",
        TRAINING_INPUT,
        TRAINING_OUTPUT,
        date="2024-08-10T00:00:00Z",
        kind="training",
        minutes=5.0,
        related=("fal-ai/flux-lora",),
    ),
    _entry(
        "fal-ai/wan-trainer",
        "Wan 2.1 LoRA Trainer",
        TRAIN,
        "Train Wan 2.1 video LoRAs for custom motion and styles.",
        ("lora", "training", "video"),
        5.0,
        "request",
        TRAINING_INPUT,
        TRAINING_OUTPUT,
        date="2025-03-10T00:00:00Z",
        kind="training",
        minutes=20.0,
    ),
    # llm
    _entry(
        "openrouter/router",
        "OpenRouter",
        LLM,
        "Any LLM through OpenRouter: chat completions with one endpoint.",
        ("llm", "chat"),
        0.001,
        "1k_tokens",
        LLM_INPUT,
        LLM_OUTPUT,
        date="2025-07-01T00:00:00Z",
        minutes=0.1,
    ),
    _entry(
        "openrouter/router/vision",
        "OpenRouter Vision",
        LLM,
        "Vision-language models through OpenRouter: describe and reason about images.",
        ("llm", "vision"),
        0.002,
        "1k_tokens",
        VISION_INPUT,
        LLM_OUTPUT,
        date="2025-07-01T00:00:00Z",
        minutes=0.1,
    ),
)


def catalog(state: EmulatorState) -> list[CatalogModel]:
    """Built-in models first, then catalog-only entries whose ids no built-in model already claims."""
    builtins: list[CatalogModel] = list(state.models.all())
    taken = {model.info.endpoint_id for model in builtins}
    return [*builtins, *(entry for entry in CATALOG_ONLY if entry.info.endpoint_id not in taken)]


def find(state: EmulatorState, endpoint_id: str) -> CatalogModel | None:
    """The catalog model with exactly this endpoint id."""
    wanted = endpoint_id.strip().strip("/")
    return next((model for model in catalog(state) if model.info.endpoint_id == wanted), None)
