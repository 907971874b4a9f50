// The official TypeScript MCP SDK client (pinned in package.json), driven one command at a time by pytest.
//
// Reads JSON commands, one a line, on stdin; answers each with one JSON line on stdout carrying the same `id`:
//   {"id", "op": "connect", "server": {"transport": "stdio", "command", "args", "env", "cwd"}
//                                     | {"transport": "http", "url", "headers"},
//    "protocolVersion"?: offer this version instead of the SDK's latest, "clientInfo"?: {"name", "version"},
//    "elicitation"?: "accept" | "decline" (declare form elicitation and answer every form so)}
//   {"id", "op": "listTools"} -> the tools, and `validated`: those whose results callTool checks
//   {"id", "op": "callTool", "name", "arguments", "abortAfterProgress"?: n, "timeoutMs"?: ms}
//       -> the result exactly as `client.callTool` returned it (it validates structuredContent against the
//          tool's outputSchema), or what it threw; the progress its onprogress received, and every progress
//          notification the server sent for it (`wireProgress`, read off the wire before the SDK)
//   {"id", "op": "diagnostics"} -> protocol errors the client reported, the ids of the requests it cancelled
//       and of those answered, progress the server sent after a request's response, the forms the server asked
//       the user to fill, the server's stderr (stdio)
//   {"id", "op": "close"}
// Commands run concurrently; answers come back as each finishes.

import readline from 'node:readline';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ElicitRequestSchema } from '@modelcontextprotocol/sdk/types.js';

const STDERR_LIMIT = 200_000;

let client = null;
let transport = null;
let negotiated = null;
let serverStderr = '';
const clientErrors = [];
const elicitations = []; // the forms the server asked this client's user to fill (params of elicitation/create)
const cancelledRequests = []; // ids of the requests this client cancelled (notifications/cancelled sent)
// What came off the wire, in order, before the SDK handled it. The SDK hands notifications to their handlers
// a microtask later but settles responses at once, so progress read in the same chunk as its response is
// dropped ("unknown token"); the wire record still shows what the server sent, and in which order.
let wireSeq = 0;
const wireProgress = new Map(); // progressToken -> [{seq, progress, total, message}]
const respondedAt = new Map(); // request id -> seq of its response
let lastToolCall = null; // id of the tools/call request sent last

function reply(message) {
  process.stdout.write(JSON.stringify(message) + '\n');
}

function describe(error) {
  if (error instanceof Error) {
    return { name: error.name, message: error.message, code: error.code ?? null, data: error.data ?? null };
  }
  return { name: typeof error, message: String(error), code: null, data: null };
}

function makeTransport(server) {
  if (server.transport === 'stdio') {
    const stdio = new StdioClientTransport({
      command: server.command,
      args: server.args ?? [],
      env: server.env,
      cwd: server.cwd,
      stderr: 'pipe',
    });
    // Drained continuously so a chatty server never blocks on a full pipe.
    stdio.stderr.on('data', (chunk) => {
      serverStderr = (serverStderr + chunk.toString()).slice(-STDERR_LIMIT);
    });
    return stdio;
  }
  if (server.transport === 'http') {
    return new StreamableHTTPClientTransport(new URL(server.url), { requestInit: { headers: server.headers ?? {} } });
  }
  throw new Error(`unknown transport ${server.transport}`);
}

// Offers `version` in `initialize` instead of the SDK's latest (as a host built on an older SDK would) and
// records what the server answered.
function observeHandshake(t, version) {
  const send = t.send.bind(t);
  t.send = (message, options) => {
    if (message.method === 'notifications/cancelled') cancelledRequests.push(message.params.requestId);
    if (message.method === 'tools/call') lastToolCall = message.id;
    if (version && message.method === 'initialize') {
      message = { ...message, params: { ...message.params, protocolVersion: version } };
    }
    return send(message, options);
  };
  const start = t.start.bind(t);
  t.start = () => {
    const onmessage = t.onmessage;
    t.onmessage = (message, extra) => {
      if (negotiated === null && message.result?.protocolVersion) negotiated = message.result.protocolVersion;
      wireSeq += 1;
      if (message.method === 'notifications/progress') {
        const { progressToken, progress, total, message: text } = message.params;
        if (!wireProgress.has(progressToken)) wireProgress.set(progressToken, []);
        wireProgress.get(progressToken).push({ seq: wireSeq, progress, total: total ?? null, message: text ?? null });
      } else if (message.id !== undefined && (message.result !== undefined || message.error !== undefined)) {
        respondedAt.set(message.id, wireSeq);
      }
      onmessage?.(message, extra);
    };
    return start();
  };
}

const ops = {
  async connect(command) {
    // "elicitation": "accept" | "decline" answers every form the server shows (the host's user clicking).
    const capabilities = command.elicitation ? { elicitation: { form: {} } } : {};
    client = new Client(command.clientInfo ?? { name: 'fal-mcp-ts-test', version: '0.0.0' }, { capabilities });
    client.onerror = (error) => clientErrors.push(describe(error));
    if (command.elicitation) {
      client.setRequestHandler(ElicitRequestSchema, async (request) => {
        elicitations.push(request.params);
        return command.elicitation === 'accept' ? { action: 'accept', content: { approve: true } } : { action: 'decline' };
      });
    }
    transport = makeTransport(command.server);
    observeHandshake(transport, command.protocolVersion);
    await client.connect(transport);
    return {
      protocolVersion: negotiated,
      serverInfo: client.getServerVersion(),
      capabilities: client.getServerCapabilities(),
      instructions: client.getInstructions() ?? null,
    };
  },

  async listTools() {
    const listed = await client.listTools();
    // The tools whose results callTool will now check against an outputSchema (cached by listTools).
    const validated = listed.tools.map((tool) => tool.name).filter((name) => client.getToolOutputValidator(name));
    return { ...listed, validated };
  },

  async callTool(command) {
    const progress = [];
    const controller = new AbortController();
    const options = {
      signal: controller.signal,
      timeout: command.timeoutMs ?? 60_000,
      resetTimeoutOnProgress: true,
      onprogress: (event) => {
        progress.push({ progress: event.progress, total: event.total ?? null, message: event.message ?? null });
        if (command.abortAfterProgress && progress.length >= command.abortAfterProgress) {
          controller.abort(new Error('cancelled by the test'));
        }
      },
    };
    const call = client.callTool({ name: command.name, arguments: command.arguments ?? {} }, undefined, options);
    const requestId = lastToolCall; // callTool sent its request synchronously
    const answer = (threw, result) => {
      const wire = (wireProgress.get(requestId) ?? []).map(({ seq, ...event }) => event);
      return { requestId, threw, result, progress, wireProgress: wire };
    };
    try {
      return answer(null, await call);
    } catch (error) {
      return answer(describe(error), null);
    }
  },

  async diagnostics() {
    const progressAfterResponse = [];
    for (const [token, events] of wireProgress) {
      const answered = respondedAt.get(token);
      for (const event of events) if (answered !== undefined && event.seq > answered) progressAfterResponse.push({ token, ...event });
    }
    return {
      clientErrors,
      cancelledRequests,
      responded: [...respondedAt.keys()],
      progressAfterResponse,
      elicitations,
      serverStderr,
    };
  },

  async close() {
    await client?.close();
    return {};
  },
};

const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
const pending = new Set();
lines.on('line', (line) => {
  if (!line.trim()) return;
  const command = JSON.parse(line);
  const run = (async () => {
    try {
      reply({ id: command.id, ok: true, value: await ops[command.op](command) });
    } catch (error) {
      reply({ id: command.id, ok: false, error: describe(error), stack: error?.stack ?? null });
    }
  })();
  pending.add(run);
  run.finally(() => pending.delete(run));
});
lines.on('close', async () => {
  await Promise.allSettled([...pending]);
  await client?.close().catch(() => {});
  process.exit(0);
});
