// A minimal MCP Apps host for the browser test: the official host-side bridge (AppBridge from
// @modelcontextprotocol/ext-apps) in a page, wired to a real fal-mcp over streamable HTTP with the
// TypeScript SDK client, loading the server's ui:// resource in a sandboxed iframe the way hosts do.
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import {
  AppBridge,
  PostMessageTransport,
  RESOURCE_MIME_TYPE,
  getToolUiResourceUri,
} from "@modelcontextprotocol/ext-apps/app-bridge";

const log = (window.hostLog = []);
window.modelContext = null;
window.chatMessages = [];
window.displayModes = [];

// The CSP a host builds from the resource's _meta.ui.csp (no inline secrets; only the declared origins).
function cspFor(csp = {}) {
  const media = (csp.resourceDomains || []).join(" ");
  const connect = (csp.connectDomains || []).join(" ");
  return [
    "default-src 'none'",
    "script-src 'unsafe-inline'",
    "style-src 'unsafe-inline'",
    `img-src ${media} data:`,
    `media-src ${media}`,
    `connect-src ${connect || "'none'"}`,
  ].join("; ");
}

async function start() {
  const params = new URLSearchParams(location.search);
  const client = new Client(
    { name: "fal-mcp-apps-test-host", version: "1.0.0" },
    { capabilities: { extensions: { "io.modelcontextprotocol/ui": { mimeTypes: [RESOURCE_MIME_TYPE] } } } },
  );
  await client.connect(new StreamableHTTPClientTransport(new URL("/mcp", location.href)));
  const { tools } = await client.listTools();
  const subscribe = tools.find((tool) => tool.name === "fal_subscribe");
  const uri = getToolUiResourceUri(subscribe);
  const { contents } = await client.readResource({ uri });
  const [resource] = contents;
  if (resource.mimeType !== RESOURCE_MIME_TYPE) throw new Error("unexpected mime type " + resource.mimeType);
  const csp = resource._meta?.ui?.csp;
  window.appCsp = cspFor(csp);

  const iframe = document.createElement("iframe");
  iframe.id = "app";
  iframe.sandbox = "allow-scripts";
  iframe.style.width = params.get("width") || "720px";
  iframe.style.height = "600px";
  const meta = `<meta http-equiv="Content-Security-Policy" content="${window.appCsp}">`;
  iframe.srcdoc = resource.text.replace("<head>", "<head>" + meta);

  const theme = params.get("theme") || "light";
  const bridge = new AppBridge(
    client,
    { name: "fal-mcp-apps-test-host", version: "1.0.0" },
    { serverTools: {}, updateModelContext: { text: {} }, message: { text: {} }, openLinks: {} },
    {
      hostContext: {
        theme,
        displayMode: "inline",
        availableDisplayModes: ["inline", "fullscreen"],
        toolInfo: { tool: subscribe },
      },
    },
  );
  bridge.onupdatemodelcontext = async (params) => {
    window.modelContext = params;
    return {};
  };
  bridge.onmessage = async (params) => {
    window.chatMessages.push(params);
    return {};
  };
  bridge.onrequestdisplaymode = async ({ mode }) => {
    window.displayModes.push(mode);
    iframe.style.height = mode === "fullscreen" ? "100vh" : "600px";
    bridge.setHostContext({ theme, displayMode: mode, availableDisplayModes: ["inline", "fullscreen"] });
    return { mode };
  };
  bridge.onsizechange = ({ height }) => {
    if (height && iframe.style.height !== "100vh") iframe.style.height = Math.min(height, 2000) + "px";
  };
  const initialized = new Promise((resolve) => (bridge.oninitialized = resolve));
  document.body.append(iframe);
  await bridge.connect(new PostMessageTransport(iframe.contentWindow, iframe.contentWindow));
  await initialized;
  log.push("initialized");

  // The model's tool call, as a host makes it: input to the app, the call to the server, the result to the app.
  window.callModelTool = async (name, args) => {
    await bridge.sendToolInput({ arguments: args });
    const result = await client.callTool({ name, arguments: args });
    await bridge.sendToolResult(result);
    log.push("result " + name);
    return result.structuredContent;
  };
  window.hostReady = true;
}

start().catch((err) => {
  window.hostError = String(err && err.stack ? err.stack : err);
});
