// fal's official JS client (@fal-ai/client), unchanged, against the local fal emulator in proxyUrl mode.
//
// Reads {base_url, key, calls, upload, image_png} as JSON on stdin (tests/conformance/scenarios.py) and
// prints one JSON line per scenario: {"scenario", "ok": true, "result"} or {"scenario", "ok": false,
// "error"}. It only reports what the client returned or threw; test_fal_client_js.py asserts on it.
// The scenarios run one after another: the emulator has one runner per app.

import { createHash } from "node:crypto";
import { fal, ApiError, ValidationError } from "@fal-ai/client";
import { WebSocket as WsWebSocket } from "ws";

const input = JSON.parse(await readStdin());
const { base_url: baseUrl, calls } = input;

// fal-js's realtime uses the global WebSocket, which Node 20 lacks (Node 22 has one): like any Node-20
// user, give it the `ws` package's.
if (typeof globalThis.WebSocket === "undefined") globalThis.WebSocket = WsWebSocket;

// fal-js opens realtime sessions on wss://fal.run/… (no setting moves it, and the proxy cannot carry a
// WebSocket); the emulator serves fal.run under /run, so those sessions go there, as FAL_RUN_HOST does for
// fal_client. Everything else about the socket is the platform's. The URLs fal-js asked for are kept.
const openedUrls = [];
const PlatformWebSocket = globalThis.WebSocket;
globalThis.WebSocket = class extends PlatformWebSocket {
  constructor(url, protocols) {
    openedUrls.push(String(url));
    super(String(url).replace(/^wss:\/\/fal\.run\//, `${baseUrl.replace(/^http/, "ws")}/run/`), protocols);
  }
};

// Outside a browser the proxy applies only with `when: "always"`.
fal.config({ proxyUrl: { url: `${baseUrl}/proxy`, when: "always" }, credentials: input.key });

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");
const messages = (logs) => (Array.isArray(logs) ? logs.map((entry) => entry.message) : logs ?? null);

function readStdin() {
  return new Promise((resolve, reject) => {
    let text = "";
    process.stdin.setEncoding("utf8");
    process.stdin.on("data", (chunk) => (text += chunk));
    process.stdin.on("end", () => resolve(text));
    process.stdin.on("error", reject);
  });
}

/** What an error looked like to the caller: its class, status, body and helpers. */
function describeError(error) {
  const described = {
    name: error?.name ?? null,
    isApiError: error instanceof ApiError,
    isValidationError: error instanceof ValidationError,
    status: error?.status ?? null,
    body: error?.body ?? null,
    requestId: error?.requestId ?? null,
    message: String(error?.message ?? error),
  };
  if (error instanceof ValidationError) {
    described.fieldErrors = error.fieldErrors;
    described.promptErrors = error.getFieldErrors("prompt");
  }
  return described;
}

async function failure(promise) {
  try {
    const value = await promise;
    return { resolved: value };
  } catch (error) {
    return describeError(error);
  }
}

/** GET a file URL the emulator returned (directly: the CDN is public). */
async function download(url) {
  const response = await fetch(url);
  const bytes = Buffer.from(await response.arrayBuffer());
  const png = bytes.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
  return {
    url,
    status: response.status,
    contentType: response.headers.get("content-type"),
    length: bytes.length,
    sha256: sha256(bytes),
    pngSize: png ? [bytes.readUInt32BE(16), bytes.readUInt32BE(20)] : null,
  };
}

async function waitCompleted(endpointId, requestId) {
  for (;;) {
    const status = await fal.queue.status(endpointId, { requestId, logs: true });
    if (status.status === "COMPLETED") return status;
    await sleep(10);
  }
}

/** Replies a callback receives, awaited one at a time (failing after `ms` if none comes). */
function inbox(ms = 20000) {
  const waiting = [];
  const readers = [];
  return {
    push(item) {
      const reader = readers.shift();
      if (reader) reader(item);
      else waiting.push(item);
    },
    next() {
      if (waiting.length) return Promise.resolve(waiting.shift());
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no reply within ${ms} ms`)), ms);
        readers.push((item) => {
          clearTimeout(timer);
          resolve(item);
        });
      });
    },
  };
}

async function subscribe(mode) {
  const blocker = await fal.queue.submit(calls.blocker.endpoint_id, { input: calls.blocker.input });
  const enqueued = [];
  const updates = [];
  const result = await fal.subscribe(calls.subscribe.endpoint_id, {
    input: calls.subscribe.input,
    logs: true,
    mode,
    pollInterval: 10,
    onEnqueue: (requestId) => enqueued.push(requestId),
    // Copy what each update says at that moment (streaming mode keeps growing one logs array).
    onQueueUpdate: (update) =>
      updates.push({
        status: update.status,
        queue_position: update.queue_position ?? null,
        logs: messages(update.logs),
        error: update.error ?? null,
      }),
  });
  return { data: result.data, requestId: result.requestId, enqueued, updates, blocker: blocker.request_id };
}

const scenarios = {
  subscribe_polling: () => subscribe("polling"),

  subscribe_streaming: () => subscribe("streaming"),

  async queue() {
    const { endpoint_id: endpointId, input: callInput } = calls.queue;
    const submitted = await fal.queue.submit(endpointId, { input: callInput });
    const final = await waitCompleted(endpointId, submitted.request_id);
    const withoutLogs = await fal.queue.status(endpointId, { requestId: submitted.request_id, logs: false });
    const result = await fal.queue.result(endpointId, { requestId: submitted.request_id });
    return {
      submitted,
      final: { ...final, logs: messages(final.logs) },
      logsWithoutFlag: withoutLogs.logs,
      data: result.data,
      requestId: result.requestId,
    };
  },

  async cancel() {
    const { endpoint_id: endpointId, input: callInput } = calls.long;
    const running = await fal.queue.submit(endpointId, { input: callInput });
    const queued = await fal.queue.submit(endpointId, { input: callInput });
    const queuedStatus = await fal.queue.status(endpointId, { requestId: queued.request_id });
    const runningStatus = await fal.queue.status(endpointId, { requestId: running.request_id });
    const cancelQueued = await fal.queue.cancel(endpointId, { requestId: queued.request_id });
    const cancelRunning = await fal.queue.cancel(endpointId, { requestId: running.request_id });
    const outcomes = {};
    for (const [name, request] of [
      ["queued", queued],
      ["running", running],
    ]) {
      const final = await waitCompleted(endpointId, request.request_id);
      outcomes[name] = {
        status: { status: final.status, error: final.error ?? null, error_type: final.error_type ?? null },
        result: await failure(fal.queue.result(endpointId, { requestId: request.request_id })),
      };
    }
    const again = await failure(fal.queue.cancel(endpointId, { requestId: running.request_id }));
    return {
      queuedStatus: queuedStatus.status,
      queuePosition: queuedStatus.queue_position,
      runningStatus: runningStatus.status,
      cancelReturns: [cancelQueued ?? null, cancelRunning ?? null],
      outcomes,
      again,
    };
  },

  async run() {
    const result = await fal.run(calls.run.endpoint_id, { input: calls.run.input });
    return { data: result.data, requestId: result.requestId, image: await download(result.data.images[0].url) };
  },

  async blob_input() {
    // A Blob in the input is uploaded to storage first (transformInput), then fetched by the model.
    const png = Buffer.from(input.image_png, "base64");
    const result = await fal.run("fal-ai/flux/dev/image-to-image", {
      input: {
        prompt: "keep it",
        image_url: new Blob([png], { type: "image/png" }),
        strength: 0.01,
        num_inference_steps: 10,
        output_format: "png",
      },
    });
    return { data: result.data, image: await download(result.data.images[0].url) };
  },

  async stream() {
    const stream = await fal.stream(calls.stream.endpoint_id, { input: calls.stream.input });
    const events = [];
    for await (const event of stream) events.push(event);
    const done = await stream.done();
    return { events, done, requestId: stream.requestId };
  },

  async stream_client_side() {
    // connectionMode "client": a short-lived token (fetched through the proxy by the client's default
    // provider), then a direct request with ?fal_jwt_token= and no Authorization header.
    const { endpoint_id: endpointId } = calls.stream;
    const stream = await fal.stream(endpointId, {
      input: calls.stream.input,
      connectionMode: "client",
      url: `${baseUrl}/run/${endpointId}/stream`,
    });
    const done = await stream.done();
    return { done, requestId: stream.requestId };
  },

  async realtime() {
    // One session: a good input, a bad one (an error frame; the session stays open), then a tagged one.
    const { endpoint_id: endpointId, input: callInput } = calls.realtime;
    const replies = inbox();
    const connection = fal.realtime.connect(endpointId, {
      maxBuffering: 4,
      throttleInterval: 0, // every send goes out (the default 128 ms throttle keeps only the latest)
      onResult: (result) => replies.push({ result }),
      onError: (error) => replies.push({ error: describeError(error) }),
    });
    const answers = [];
    for (const message of [callInput, { prompt: 5 }, { ...callInput, request_id: "second" }]) {
      connection.send(message);
      answers.push(await replies.next());
    }
    connection.close();
    const [first, invalid, again] = answers;
    const image = first.result ? await download(first.result.images[0].url) : null;
    return { first, invalid, again, image, urls: openedUrls };
  },

  async realtime_wrong_token() {
    // The recommended tokenProvider, here handing over a token for another app (fetched as a user's
    // backend would, with the key): the session is refused, and fal-js reports it through onError.
    const { endpoint_id: endpointId, input: callInput } = calls.realtime;
    const response = await fetch(`${baseUrl}/rest/tokens/`, {
      method: "POST",
      headers: { authorization: `Key ${input.key}`, "content-type": "application/json" },
      body: JSON.stringify({ allowed_apps: ["some-other-app"], token_expiration: 60 }),
    });
    const token = await response.json();
    const replies = inbox();
    const connection = fal.realtime.connect(endpointId, {
      throttleInterval: 0,
      tokenProvider: async (app) => {
        replies.push({ tokenFor: app });
        return token;
      },
      onResult: (result) => replies.push({ result }),
      onError: (error) => replies.push({ error: describeError(error) }),
    });
    connection.send(callInput);
    const asked = await replies.next();
    const refused = await replies.next();
    connection.close();
    return { asked, refused };
  },

  async storage() {
    const bytes = Buffer.from(input.upload.data, "base64");
    const url = await fal.storage.upload(new Blob([bytes], { type: input.upload.content_type }));
    return { url, file: await download(url) };
  },

  async validation_error() {
    const { endpoint_id: endpointId, input: callInput } = calls.invalid;
    return {
      run: await failure(fal.run(endpointId, { input: callInput })),
      subscribe: await failure(fal.subscribe(endpointId, { input: callInput, pollInterval: 10 })),
    };
  },

  async unknown_app() {
    const { endpoint_id: endpointId, input: callInput } = calls.unknown_app;
    return {
      run: await failure(fal.run(endpointId, { input: callInput })),
      submit: await failure(fal.queue.submit(endpointId, { input: callInput })),
    };
  },
};

const only = process.argv.slice(2);
for (const [name, scenario] of Object.entries(scenarios)) {
  if (only.length && !only.includes(name)) continue;
  let line;
  try {
    line = { scenario: name, ok: true, result: await scenario() };
  } catch (error) {
    line = { scenario: name, ok: false, error: describeError(error), stack: String(error?.stack ?? "") };
  }
  process.stdout.write(JSON.stringify(line) + "\n");
}
