# fal-mcp in a container: MCP over stdio by default; FAL_MCP_TRANSPORT=http serves streamable HTTP.
#
#   docker build -t fal-mcp .
#   docker run -i --rm -e FAL_KEY fal-mcp                                   # stdio, as an MCP client runs it
#   docker run --rm -p 8765:8765 -e FAL_KEY -e FAL_MCP_TRANSPORT=http \
#     -e FAL_MCP_HTTP_TOKEN=a-long-random-token -v fal-mcp-data:/data fal-mcp  # http://localhost:8765/mcp
#
# Extra arguments go to `fal-mcp serve` (e.g. --per-user). The job ledger and cache live in /data (a
# volume); files to upload and saved outputs live in /workspace (mount a folder there).
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fal_mcp ./fal_mcp
RUN python3 -m venv /opt/fal-mcp \
    && /opt/fal-mcp/bin/pip install --no-cache-dir . \
    && /opt/fal-mcp/bin/fal-mcp --version

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 fal \
    && useradd --no-log-init --system --uid 10001 --gid 10001 --create-home --home-dir /home/fal fal \
    && mkdir -p /data /workspace \
    && chown fal:fal /data /workspace
COPY --from=build /opt/fal-mcp /opt/fal-mcp
ENV PATH=/opt/fal-mcp/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    FAL_MCP_TRANSPORT=stdio \
    FAL_MCP_HOST=0.0.0.0 \
    FAL_MCP_PORT=8765 \
    FAL_MCP_LEDGER=/data/ledger.sqlite3 \
    FAL_MCP_CACHE_DIR=/data/cache
USER 10001:10001
WORKDIR /workspace
VOLUME ["/data"]
EXPOSE 8765
# In HTTP mode the server must answer /healthz; in stdio mode there is no port, and a live process is healthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 CMD ["python3", "-c", "import os, sys, urllib.request as r; os.environ['FAL_MCP_TRANSPORT'] == 'http' or sys.exit(0); r.urlopen('http://127.0.0.1:%s/healthz' % os.environ['FAL_MCP_PORT'], timeout=4)"]
ENTRYPOINT ["/bin/sh", "-c", "exec fal-mcp serve --transport \"$FAL_MCP_TRANSPORT\" --host \"$FAL_MCP_HOST\" --port \"$FAL_MCP_PORT\" \"$@\"", "fal-mcp"]
