// socket.io-client v4 clients with the default transports (long-polling
// first, then the upgrade to WebSocket), for tests/http_socketio.rs.
//
//   node clients.js URL CLIENTS EVENTS
//
// Each client connects to URL, emits EVENTS acknowledged events one after
// another, and waits for its upgrade to WebSocket. Cookies are kept per
// client (withCredentials), as a browser would. Prints one JSON line:
// {"clients", "acked", "upgraded", "errors": [...]}. Everything is bounded
// by a deadline, after which whatever was reached is reported.
"use strict";
const { io } = require("socket.io-client");

const [url, clientsArg, eventsArg] = process.argv.slice(2);
const clients = Number(clientsArg);
const events = Number(eventsArg);
const DEADLINE_MS = 20000;

const result = { clients, acked: 0, upgraded: 0, errors: [] };
const sockets = [];

function noteError(err) {
  const body = err && err.context && err.context.responseText;
  const text = `${err && err.message}${body ? ` ${body}` : ""}`;
  if (!result.errors.includes(text) && result.errors.length < 20) {
    result.errors.push(text);
  }
}

async function runClient() {
  const socket = io(url, {
    withCredentials: true,
    reconnection: false,
    timeout: 5000,
  });
  sockets.push(socket);
  socket.on("connect_error", noteError);
  socket.io.on("error", noteError);
  await new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", reject);
  });
  for (let n = 0; n < events; n++) {
    const answer = await socket.timeout(5000).emitWithAck("echo", n);
    if (answer.n !== n) {
      throw new Error(`ack ${answer.n} for event ${n}`);
    }
    result.acked += 1;
  }
  const engine = socket.io.engine;
  if (engine.transport.name !== "websocket") {
    // The upgrade, a lost session, or 5 s, whichever comes first.
    await new Promise((resolve) => {
      engine.once("upgrade", resolve);
      socket.once("disconnect", resolve);
      setTimeout(resolve, 5000).unref();
    });
  }
  if (engine.transport.name === "websocket" && socket.connected) {
    result.upgraded += 1;
  }
}

function finish() {
  for (const s of sockets) {
    s.disconnect();
  }
  console.log(JSON.stringify(result));
  process.exit(0);
}

setTimeout(finish, DEADLINE_MS).unref();
Promise.allSettled(Array.from({ length: clients }, () => runClient().catch(noteError))).then(finish);
