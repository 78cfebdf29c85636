// Three socket.io v4 servers on loopback port 0 for tests/http_socketio.rs.
// Prints "ports A,B,C" once all listen, then every engine.io connection
// error (such as "Session ID unknown") as "connection_error MESSAGE".
// Exits when its standard input closes, so it never outlives the test.
"use strict";
const http = require("http");
const { Server } = require("socket.io");

const servers = [];
let ready = 0;
for (let i = 0; i < 3; i++) {
  const httpServer = http.createServer();
  const io = new Server(httpServer);
  io.engine.on("connection_error", (err) => {
    console.log(`connection_error ${err.message}`);
  });
  io.on("connection", (socket) => {
    socket.on("echo", (n, ack) => ack({ n, server: i }));
  });
  httpServer.listen(0, "127.0.0.1", () => {
    ready += 1;
    if (ready === 3) {
      console.log(`ports ${servers.map((s) => s.address().port).join(",")}`);
    }
  });
  servers.push(httpServer);
}
process.stdin.resume();
process.stdin.on("end", () => process.exit(0));
