// imapnotify_peer.js: the peer of bench/watch_imap_bench.py, standing in for
// imapnotify (a-sk/node-imapnotify).
//
// imapnotify itself is not in the npm registry this benchmark can reach
// (`npm view imapnotify`: 404), and its Go successor goimapnotify is neither
// on npm nor in Debian 12.  This file does what imapnotify does, written
// afresh on the library imapnotify is built on, node-imap (npm `imap`, 0.8.19):
//
//   - one IMAP connection per watched box, the box opened read-only;
//   - node-imap IDLEs on it (its keepalive, on by default) and emits 'mail'
//     when the box's EXISTS count grows;
//   - on each 'mail' the box's command runs through /bin/sh, at once, one
//     run per event, no batching (imapnotify's onNotify, "%s" replaced by
//     the box's name).
//
// Like imapnotify it reacts to new mail only (no expunges, flag changes or
// folders that come and go).  It does not reconnect: the benchmark treats a
// lost connection as a failure (the process exits 1).
//
// Usage: node imapnotify_peer.js CONFIG.json
//   CONFIG: {"host", "port", "tls": true, "ca": "PEM file", "username",
//            "password", "boxes": ["f01", ...], "onNotify": "CMD %s"}
// The library is found through NODE_PATH (the benchmark installs it).
// Output: one empty line on stdout once every box is open; errors on stderr.

"use strict";

const fs = require("fs");
const childProcess = require("child_process");
const Imap = require("imap");

const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const connections = [];
let opened = 0;

function fail(box, what, err) {
  process.stderr.write(`imapnotify_peer: ${box}: ${what}: ${err && err.message}\n`);
  process.exit(1);
}

function notify(box) {
  const command = config.onNotify.split("%s").join(box);
  childProcess.exec(command, (err) => {
    if (err) {
      process.stderr.write(`imapnotify_peer: ${box}: ${command}: ${err.message}\n`);
    }
  });
}

function watch(box) {
  const imap = new Imap({
    user: config.username,
    password: config.password,
    host: config.host,
    port: config.port,
    tls: config.tls,
    tlsOptions: { ca: [fs.readFileSync(config.ca)], servername: config.host },
    keepalive: true,
  });
  connections.push(imap);
  // node-imap emits 'mail' for the messages a box holds when it is opened,
  // too; the benchmark starts this with every box empty.
  imap.on("mail", () => notify(box));
  imap.once("ready", () => {
    imap.openBox(box, true, (err) => {
      if (err) fail(box, "openBox", err);
      opened += 1;
      if (opened === config.boxes.length) process.stdout.write("\n");
    });
  });
  imap.on("error", (err) => fail(box, "connection", err));
  imap.on("end", () => fail(box, "connection", new Error("ended")));
  imap.connect();
}

function stop() {
  for (const imap of connections) {
    imap.removeAllListeners("end");
    imap.removeAllListeners("error");
    imap.on("error", () => {});
    imap.end();
  }
  setTimeout(() => process.exit(0), 200);
}

process.on("SIGTERM", stop);
process.on("SIGINT", stop);
for (const box of config.boxes) watch(box);
