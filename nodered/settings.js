/**
 * Node-RED settings for the IoT lab, used by both runs:
 *   native:  node red.js --settings nodered/settings.js --userDir data/nodered
 *   Compose: mounted as /data/settings.js in the nodered/node-red image
 * Secrets come from the environment (.env), never from this file.
 */
const crypto = require("crypto");
const path = require("path");

function required(name) {
    const value = process.env[name];
    if (!value) {
        throw new Error(`${name} is not set: run ./lab env (or ./lab up) to create .env`);
    }
    return value;
}

const adminPassword = required("NODERED_ADMIN_PASSWORD");

// The alarm rules the shipped flows read at start (nodered/rules.json beside this file;
// Compose sets the path inside the container).
process.env.NODERED_RULES_FILE = process.env.NODERED_RULES_FILE || path.join(__dirname, "rules.json");

// Every socket Node-RED opens sends at once (TCP_NODELAY). With Nagle's algorithm on, an alarm
// published right after a reading waits for the broker's delayed ACK: about 40 ms per alarm.
const net = require("net");
const connectSocket = net.Socket.prototype.connect;
net.Socket.prototype.connect = function (...args) {
    this.setNoDelay(true);
    return connectSocket.apply(this, args);
};

/** Constant-time comparison, so the editor login leaks nothing through timing. */
function samePassword(given) {
    const a = crypto.createHash("sha256").update(String(given)).digest();
    const b = crypto.createHash("sha256").update(adminPassword).digest();
    return crypto.timingSafeEqual(a, b);
}

module.exports = {
    uiPort: Number(process.env.NODERED_PORT || 1880),
    // The native run binds to 127.0.0.1; in a container every interface is used.
    uiHost: process.env.NODERED_HOST || "0.0.0.0",

    // The shipped flows live beside this file (nodered/flows.json in the repository);
    // deploying from the editor writes them back there.
    flowFile: path.join(__dirname, "flows.json"),
    flowFilePretty: true,
    credentialSecret: required("NODERED_CREDENTIAL_SECRET"),

    // Editor and admin API: one user, "admin", password NODERED_ADMIN_PASSWORD.
    adminAuth: {
        type: "credentials",
        users: async (username) => (username === "admin" ? { username: "admin", permissions: "*" } : null),
        authenticate: async (username, password) =>
            username === "admin" && samePassword(password) ? { username: "admin", permissions: "*" } : null,
    },

    // The lab runs without Internet access: no update checks, no remote palette catalogue.
    telemetry: { enabled: false },
    diagnostics: { enabled: true, ui: false },
    editorTheme: {
        tours: false,
        palette: { catalogues: [] },
    },

    functionExternalModules: false,
    exportGlobalContextKeys: false,
    logging: {
        console: { level: "info", metrics: false, audit: false },
    },
};
