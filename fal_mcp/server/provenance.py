"""What a saved file really is, and where it came from written into it.

``sniff`` reads a file's first bytes to find its true type (fal's URL or declared type may say ``.bin``
or lie). ``write_provenance`` copies an image while adding the endpoint, request id, seed, prompt and
time as metadata, working on the container only: PNG gets ``iTXt`` chunks after ``IHDR``, JPEG an XMP
``APP1`` segment, WebP an ``XMP`` chunk (with a ``VP8X`` header when it had none). The compressed pixel
data is copied byte for byte, so nothing is re-encoded and memory stays bounded however large the
image is. Pillow reads all three back (``Image.open(p).text`` / ``.info["xmp"]``).
"""

from __future__ import annotations

import mimetypes
import shutil
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO
from xml.sax.saxutils import escape, quoteattr

HEAD_BYTES = 64
MAX_PROMPT_CHARS = 8000  # a JPEG APP1 segment holds at most 64 KiB
XMP_NAMESPACE = "https://github.com/fal-mcp/fal-mcp/ns/provenance/1.0/"


@dataclass(frozen=True)
class FileType:
    ext: str
    mime: str

    @property
    def kind(self) -> str:
        """image, video, audio or file: how a gallery shows it."""
        top = self.mime.split("/", 1)[0]
        return top if top in ("image", "video", "audio") else "file"


def _ftyp(head: bytes) -> FileType | None:
    if head[4:8] != b"ftyp":
        return None
    brand = head[8:12]
    if brand == b"qt  ":
        return FileType("mov", "video/quicktime")
    if brand in (b"M4A ", b"M4B "):
        return FileType("m4a", "audio/mp4")
    if brand in (b"avif", b"avis"):
        return FileType("avif", "image/avif")
    if brand in (b"heic", b"heix", b"mif1", b"msf1"):
        return FileType("heic", "image/heic")
    return FileType("mp4", "video/mp4")


_MAGIC: tuple[tuple[bytes, int, FileType], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, FileType("png", "image/png")),
    (b"\xff\xd8\xff", 0, FileType("jpg", "image/jpeg")),
    (b"GIF87a", 0, FileType("gif", "image/gif")),
    (b"GIF89a", 0, FileType("gif", "image/gif")),
    (b"WEBP", 8, FileType("webp", "image/webp")),
    (b"WAVE", 8, FileType("wav", "audio/wav")),
    (b"AVI ", 8, FileType("avi", "video/x-msvideo")),
    (b"OggS", 0, FileType("ogg", "audio/ogg")),
    (b"fLaC", 0, FileType("flac", "audio/flac")),
    (b"ID3", 0, FileType("mp3", "audio/mpeg")),
    (b"glTF", 0, FileType("glb", "model/gltf-binary")),
    (b"%PDF-", 0, FileType("pdf", "application/pdf")),
    (b"PK\x03\x04", 0, FileType("zip", "application/zip")),
    (b"II*\x00", 0, FileType("tif", "image/tiff")),
    (b"MM\x00*", 0, FileType("tif", "image/tiff")),
)


def sniff(head: bytes, declared_type: str | None = None, file_name: str | None = None) -> FileType:
    """The file's type from its first bytes; else what fal declared; else its name's extension; else bin."""
    for magic, offset, found in _MAGIC:
        if head[offset : offset + len(magic)] == magic and (offset == 0 or head[:4] == b"RIFF"):
            return found
    if (branded := _ftyp(head)) is not None:
        return branded
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return FileType("webm", "video/webm") if b"webm" in head else FileType("mkv", "video/x-matroska")
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        if head[1] & 0x06 == 0:  # layer bits 00: ADTS AAC
            return FileType("aac", "audio/aac")
        return FileType("mp3", "audio/mpeg")
    mime = (declared_type or "").split(";", 1)[0].strip().lower()
    if not mime and file_name:
        mime = mimetypes.guess_type(file_name)[0] or ""
    if mime and mime != "application/octet-stream":
        ext = _EXT_BY_MIME.get(mime) or (mimetypes.guess_extension(mime) or "").lstrip(".")
        return FileType(ext or "bin", mime)
    return FileType("bin", "application/octet-stream")


# Types fal returns that the platform's mimetypes table may not know.
_EXT_BY_MIME = {
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/ogg": "ogg",
    "audio/flac": "flac",
    "audio/aac": "aac",
    "video/webm": "webm",
    "model/gltf-binary": "glb",
}


@dataclass(frozen=True)
class Provenance:
    """Where a file came from. Every value is untrusted text (the prompt especially)."""

    endpoint: str
    request_id: str | None
    created: str  # ISO 8601, UTC
    seed: int | str | None = None
    prompt: str | None = None
    software: str = "fal-mcp"

    def fields(self) -> dict[str, str]:
        values = {
            "fal:endpoint": self.endpoint,
            "fal:request_id": self.request_id or "",
            "fal:seed": "" if self.seed is None else str(self.seed),
            "Description": (self.prompt or "")[:MAX_PROMPT_CHARS],
            "Creation Time": self.created,
            "Software": self.software,
        }
        return {key: clean_text(value) for key, value in values.items() if value}


def write_provenance(src: BinaryIO, dst: BinaryIO, file_type: FileType, provenance: Provenance) -> bool:
    """Copy ``src`` to ``dst`` with provenance added; False (and nothing written) if the format is not handled."""
    writer = {"png": _png, "jpg": _jpeg, "webp": _webp}.get(file_type.ext)
    if writer is None:
        return False
    return writer(src, dst, provenance)


# --------------------------------------------------------------------------- PNG


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png(src: BinaryIO, dst: BinaryIO, provenance: Provenance) -> bool:
    head = src.read(33)  # signature (8) + IHDR chunk (4 + 4 + 13 + 4)
    if len(head) < 33 or head[12:16] != b"IHDR":
        return False
    dst.write(head)
    for key, value in provenance.fields().items():
        # iTXt: keyword, NUL, compression flag and method, empty language tag and translated keyword, UTF-8 text.
        dst.write(_png_chunk(b"iTXt", key.encode("latin-1") + b"\x00\x00\x00\x00\x00" + value.encode()))
    shutil.copyfileobj(src, dst, 1024 * 1024)
    return True


# --------------------------------------------------------------------------- XMP (JPEG, WebP)


def xmp_packet(provenance: Provenance) -> bytes:
    fields = provenance.fields()
    attributes = {
        "xmp:CreatorTool": fields.get("Software"),
        "xmp:CreateDate": fields.get("Creation Time"),
        "fal:endpoint": fields.get("fal:endpoint"),
        "fal:request_id": fields.get("fal:request_id"),
        "fal:seed": fields.get("fal:seed"),
    }
    rendered = "".join(f" {name}={quoteattr(value)}" for name, value in attributes.items() if value)
    description = ""
    if prompt := fields.get("Description"):
        alt = f'<rdf:Alt><rdf:li xml:lang="x-default">{escape(prompt)}</rdf:li></rdf:Alt>'
        description = f"<dc:description>{alt}</dc:description>"
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        f'xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:fal="{XMP_NAMESPACE}"{rendered}>'
        f"{description}</rdf:Description></rdf:RDF></x:xmpmeta>"
        '<?xpacket end="w"?>'
    ).encode()


_JPEG_XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"


def _jpeg(src: BinaryIO, dst: BinaryIO, provenance: Provenance) -> bool:
    if src.read(2) != b"\xff\xd8":
        return False
    kept = bytearray(b"\xff\xd8")
    # Keep APP0 (JFIF) and an Exif APP1 first, as readers expect; the XMP segment goes right after them.
    while True:
        marker = src.read(4)
        if len(marker) < 4 or marker[0] != 0xFF:
            return False
        is_app0 = marker[1] == 0xE0
        length = struct.unpack(">H", marker[2:])[0]
        if length < 2:
            return False
        if not (is_app0 or marker[1] == 0xE1):
            break
        body = src.read(length - 2)
        if len(body) < length - 2:
            return False
        if marker[1] == 0xE1 and not body.startswith(b"Exif\x00"):
            if body.startswith(_JPEG_XMP_HEADER):
                continue  # an earlier XMP packet is replaced by ours
            kept += marker + body
            continue
        kept += marker + body
    segment = _JPEG_XMP_HEADER + xmp_packet(provenance)
    if len(segment) + 2 > 0xFFFF:
        return False
    dst.write(bytes(kept) + b"\xff\xe1" + struct.pack(">H", len(segment) + 2) + segment + marker)
    shutil.copyfileobj(src, dst, 1024 * 1024)
    return True


def _webp(src: BinaryIO, dst: BinaryIO, provenance: Provenance) -> bool:
    header = src.read(12)
    if header[:4] != b"RIFF" or header[8:12] != b"WEBP":
        return False
    chunk_head = src.read(8)
    if len(chunk_head) < 8:
        return False
    kind, size = chunk_head[:4], struct.unpack("<I", chunk_head[4:])[0]
    if kind == b"VP8X":
        vp8x = bytearray(src.read(10))
        if len(vp8x) < 10:
            return False
        vp8x[0] |= 0x04  # XMP metadata present
        prefix = b"VP8X" + struct.pack("<I", 10) + bytes(vp8x)
        first = b""
    elif kind in (b"VP8 ", b"VP8L"):
        body = src.read(min(size, 10))
        dims = _vp8_size(kind, body)
        if dims is None:
            return False
        width, height, alpha = dims
        flags = 0x04 | (0x10 if alpha else 0)
        canvas = struct.pack("<I", width - 1)[:3] + struct.pack("<I", height - 1)[:3]
        prefix = b"VP8X" + struct.pack("<I", 10) + bytes([flags, 0, 0, 0]) + canvas
        first = chunk_head + body
    else:
        return False
    xmp = xmp_packet(provenance)
    xmp_chunk = b"XMP " + struct.pack("<I", len(xmp)) + xmp + (b"\x00" if len(xmp) % 2 else b"")
    riff_size = struct.unpack("<I", header[4:8])[0]
    removed = 0 if first else 18  # an existing VP8X chunk is rewritten, not added
    new_size = riff_size + len(prefix) - removed + len(xmp_chunk)
    dst.write(b"RIFF" + struct.pack("<I", new_size) + b"WEBP" + prefix + first)
    shutil.copyfileobj(src, dst, 1024 * 1024)
    dst.write(xmp_chunk)
    return True


def _vp8_size(kind: bytes, body: bytes) -> tuple[int, int, bool] | None:
    if kind == b"VP8 ":
        if len(body) < 10 or body[3:6] != b"\x9d\x01\x2a":
            return None
        width, height = struct.unpack("<HH", body[6:10])
        return width & 0x3FFF, height & 0x3FFF, False
    if len(body) < 5 or body[0] != 0x2F:
        return None
    bits = int.from_bytes(body[1:5], "little")
    return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool((bits >> 28) & 1)


def clean_text(text: str) -> str:
    """Text that XML 1.0 and PNG iTXt can hold: control characters other than tab and newline dropped."""
    return "".join(ch for ch in text if ch in "\t\n" or (ord(ch) >= 0x20 and ord(ch) not in (0x7F, 0xFFFE, 0xFFFF)))
