"""Typed tool outputs: each becomes the tool's ``outputSchema`` and its ``structuredContent``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

JobStatus = Literal["SUBMITTING", "IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED", "UNKNOWN"]


class ModelHit(BaseModel):
    endpoint_id: str
    name: str
    category: str | None = None
    description: str | None = None
    price: str | None = Field(None, description="e.g. '$0.025 per megapixel', when known")


class ModelSearchOutput(BaseModel):
    models: list[ModelHit]
    next_cursor: str | None = None
    has_more: bool = False


class FieldSummary(BaseModel):
    name: str
    type: str
    required: bool = False
    default: Any = None
    enum: list[Any] | None = None
    minimum: float | None = None
    maximum: float | None = None
    takes_file: bool = False
    description: str | None = None


class ModelSchemaOutput(BaseModel):
    endpoint_id: str
    name: str | None = None
    category: str | None = None
    price: str | None = None
    input: list[FieldSummary]
    output: list[FieldSummary]
    file_fields: list[str] = Field(default_factory=list, description="Input fields that take a file URL or local path")
    example_input: dict[str, Any] = Field(default_factory=dict)
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None


class OutputFile(BaseModel):
    url: str
    content_type: str | None = None
    file_name: str | None = None
    width: int | None = None
    height: int | None = None
    size: int | None = None
    saved_path: str | None = None


class JobOutput(BaseModel):
    """A job's state and, once completed, fal's output."""

    status: JobStatus
    endpoint_id: str
    request_id: str | None = None
    output: Any = None
    files: list[OutputFile] = Field(default_factory=list)
    queue_position: int | None = None
    logs: list[str] = Field(default_factory=list)
    elapsed_seconds: float | None = None
    cost_estimate_usd: float | None = None
    reattached: bool = Field(False, description="True when an identical earlier job was reused instead of paying again")
    gallery: str | None = Field(None, description="index.html in download_dir showing every saved job")
    full_output: str | None = Field(None, description="Set when output was cut: the file holding all of it")
    spend: str | None = Field(None, description="Budget spent/left")
    next_step: str | None = None


class SubmitOutput(BaseModel):
    request_id: str
    endpoint_id: str
    status: JobStatus
    queue_position: int | None = None
    cost_estimate_usd: float | None = None
    spend: str | None = None
    next_step: str


class StatusOutput(BaseModel):
    request_id: str
    endpoint_id: str
    status: JobStatus
    queue_position: int | None = None
    logs: list[str] = Field(default_factory=list)
    error: str | None = None
    error_type: str | None = None
    inference_seconds: float | None = None


class CancelOutput(BaseModel):
    request_id: str
    endpoint_id: str
    outcome: Literal["CANCELLATION_REQUESTED", "ALREADY_COMPLETED"]
    message: str


class UploadOutput(BaseModel):
    url: str
    content_type: str
    file_name: str
    size: int


class JobSummary(BaseModel):
    request_id: str | None
    job_id: str | None = Field(None, description="This server's id for the job (set before fal answers)")
    endpoint_id: str
    status: JobStatus
    created_at: str
    updated_at: str
    origin_tool: str | None = None
    input_preview: str | None = None
    result_urls: list[str] = Field(default_factory=list)
    error: str | None = None
    fal: str | None = Field(None, description="Which fal ran it: fal.ai or a local emulator")


class JobsListOutput(BaseModel):
    jobs: list[JobSummary]
    ledger: str | None = Field(None, description="Set when the ledger is unavailable, saying why")


class StreamOutput(BaseModel):
    endpoint_id: str
    request_id: str | None = None
    output: Any = None
    events: int = 0
    files: list[OutputFile] = Field(default_factory=list)
    full_output: str | None = None
    next_step: str | None = None
    cost_estimate_usd: float | None = None
    spend: str | None = None


class RealtimeOutput(BaseModel):
    endpoint_id: str
    outputs: list[Any]
    files: list[OutputFile] = Field(default_factory=list)
    cost_estimate_usd: float | None = None
    spend: str | None = None
