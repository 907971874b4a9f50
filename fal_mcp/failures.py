"""Failures a tool diagnoses itself, as plain exceptions (no MCP): server/errors.py turns them into results."""

from __future__ import annotations

from typing import Any

NOTHING_PAID = "Nothing was submitted or charged."  # said by every refusal before paying

# Every error ``kind`` a tool can return (the skills document each one), with the default next step.
NEXT_STEPS: dict[str, str] = {
    "invalid_argument": "Fix the argument(s) named above and call again.",
    "invalid_input": "Fix these fields (model_schema shows every rule) and call again.",
    "content_policy": "Rephrase the prompt (or use other media) and call again.",
    "cost_limit": "Reduce the request (fewer or smaller outputs) or ask the user to raise FAL_MCP_MAX_COST_USD.",
    "approval_required": "Ask the user; if they agree, call again with the confirm_token given above.",
    "declined": "The user said no: do not retry; offer a cheaper request or ask what they want instead.",
    "budget": "Tell the user the budget is spent; they can raise FAL_MCP_BUDGET_USD_PER_DAY/_PER_SESSION.",
    "not_configured": "Ask the user to set FAL_KEY (a key from https://fal.ai/dashboard/keys) and restart the server.",
    "config": "Ask the user to fix the setting named above and restart the server.",
    "refused": "Use a file inside the workspace (or an allowed public URL) and call again.",
    "auth": "Ask the user to check that FAL_KEY is a valid, current fal key.",
    "forbidden": "This key may not do that; ask the user for a key with the needed scope.",
    "not_found": "Check the id: model_search finds models, jobs_list shows your jobs.",
    "rate_limited": "Wait a little, then call again.",
    "start_timeout": "Submit again later or with a larger start_timeout.",
    "cancelled": "Submit a new job if you still need the result.",
    "fal_unavailable": "fal looks unavailable; call again in a minute.",
    "fal_error": "Read the error above; change the input or try another model.",
    "network": "Check the network, then call again.",
    "busy": "Call again in a minute; an identical call re-attaches to another process's job instead of paying twice.",
    "submit_outcome_unknown": "Check jobs_list before submitting again; do not resubmit blindly (it may charge twice).",
    "internal": "Call it again; if it keeps failing, report the incident id.",
}
ERROR_KINDS = frozenset(NEXT_STEPS)


class ToolFailure(Exception):
    """A failure the tool itself diagnosed; ``kind`` is a stable machine-readable code."""

    def __init__(self, message: str, *, kind: str = "invalid_argument", **details: Any) -> None:
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown error kind {kind!r}; add it to ERROR_KINDS (and the skills' errors.md)")
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.details = details
