"""Direct runs on ``fal.run`` (fal-protocol.md §4) and their SSE variant ``/stream`` (§5).

Both use :attr:`RetryMode.SUBMIT`: fal never retries a run server-side and a run whose answer was
lost may still have run (and been charged), so it is sent again only when it provably never reached
fal — no connection was made, or fal refused it outright (429 concurrency limit, an edge-proxy
error page). A lost answer surfaces as :class:`~fal_mcp.fal.errors.FalConnectionError`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx2

from fal_mcp.fal._http import FalHTTP, fal_headers
from fal_mcp.fal.endpoint import EndpointId
from fal_mcp.fal.errors import FalAPIError, FalError, FalTimeoutError, make_api_error
from fal_mcp.fal.models import RunResult
from fal_mcp.fal.retry import RetryMode

CONNECT_TIMEOUT = 10.0
DEFAULT_STREAM_IDLE_TIMEOUT = 60.0


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class RunAPI:
    """``fal.run``: the output comes back in the same HTTP response (no queue, no status)."""

    def __init__(self, http: FalHTTP) -> None:
        self._http = http

    async def run(
        self,
        endpoint_id: str,
        input: Mapping[str, Any],
        *,
        start_timeout: float | None = None,
        hint: str | None = None,
        store_io: bool | None = None,
        object_lifecycle: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> RunResult:
        """Run and return the output. ``timeout=None`` waits as long as the model runs (like fal's clients)."""
        url = self._http.url("run", str(EndpointId.parse(endpoint_id)))
        headers = fal_headers(
            start_timeout=start_timeout,
            hint=hint,
            store_io=store_io,
            object_lifecycle=object_lifecycle,
            extra_headers=extra_headers,
        )
        response = await self._http.request(
            "POST",
            url,
            mode=RetryMode.SUBMIT,
            json_body=dict(input),
            headers=headers,
            timeout=httpx2.Timeout(timeout, connect=CONNECT_TIMEOUT),
        )
        request_id = response.headers.get("x-fal-request-id")
        try:
            data = response.json()
        except ValueError as exc:
            raise FalAPIError(
                "fal's run answer is not JSON", status_code=response.status_code, request_id=request_id
            ) from exc
        if not isinstance(data, dict):
            raise FalAPIError("fal's run answer is not a JSON object", request_id=request_id, body=data)
        fal_info = {k.lower(): v for k, v in response.headers.items() if k.lower().startswith("x-fal-")}
        return RunResult(
            request_id=request_id,
            data=data,
            billable_units=_float(fal_info.get("x-fal-billable-units")),
            headers=fal_info,
        )

    async def stream(
        self,
        endpoint_id: str,
        input: Mapping[str, Any],
        *,
        start_timeout: float | None = None,
        hint: str | None = None,
        store_io: bool | None = None,
        object_lifecycle: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        idle_timeout: float = DEFAULT_STREAM_IDLE_TIMEOUT,
        path: str = "stream",
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield each event of ``POST {run}/{id}/stream``; the last one is the final output.

        An error answer before the stream raises the mapped error; an ``error`` event or data that is
        not a JSON object raises :class:`FalAPIError`; nothing received for ``idle_timeout`` s (not even
        a keep-alive) raises :class:`FalTimeoutError`. Iterate inside ``contextlib.aclosing``.
        """
        endpoint = str(EndpointId.parse(endpoint_id))
        suffix = path.strip("/")
        if suffix and not endpoint.endswith("/" + suffix):
            endpoint = f"{endpoint}/{suffix}"
        url = self._http.url("run", endpoint)
        headers = {
            **fal_headers(
                start_timeout=start_timeout,
                hint=hint,
                store_io=store_io,
                object_lifecycle=object_lifecycle,
                extra_headers=extra_headers,
            ),
            "Accept": "text/event-stream",
            "Cache-Control": "no-store",
        }
        request_id: str | None = None
        started = False
        try:
            async with self._http.stream(
                "POST",
                url,
                mode=RetryMode.SUBMIT,
                json_body=dict(input),
                headers=headers,
                timeout=httpx2.Timeout(CONNECT_TIMEOUT, read=idle_timeout),
            ) as response:
                started, request_id = True, response.headers.get("x-fal-request-id")
                content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if content_type != "text/event-stream":
                    # A model that answers plain JSON: its one body is the final output.
                    await response.aread()
                    yield _event_data(response.text, request_id)
                    return
                async for event in httpx2.EventSource(response):
                    if event.event == "error":
                        raise _stream_error(event.data, request_id)
                    if not event.data.strip():
                        continue
                    yield _event_data(event.data, request_id)
        except FalTimeoutError:
            if not started:
                raise
            raise FalTimeoutError(
                f"fal's stream for {endpoint} sent nothing for {idle_timeout:g} s (request {request_id or 'unknown'})"
            ) from None
        except FalError as exc:
            if request_id is not None and exc.request_id is None:
                exc.request_id = request_id
            raise


def _event_data(text: str, request_id: str | None) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        raise FalAPIError(
            f"fal's stream sent data that is not JSON: {text[:200]!r}",
            request_id=request_id,
            error_type="malformed_event",
        ) from None
    if not isinstance(data, dict):
        raise FalAPIError("fal's stream sent an event that is not a JSON object", request_id=request_id, body=data)
    if "error_type" in data and "detail" in data and len(data) <= 3:
        raise _stream_error(text, request_id)  # an error body sent as an event after the stream started
    return data


def _stream_error(text: str, request_id: str | None) -> FalAPIError:
    try:
        body: Any = json.loads(text)
    except ValueError:
        body = text
    status = body.get("status_code") if isinstance(body, dict) else None
    headers = {"x-fal-request-id": request_id} if request_id else {}
    return make_api_error(status if isinstance(status, int) else 500, headers, body, text or "the stream failed")
