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

/**
 * Sign-in throttling for the editor, per client address.
 *
 * Node-RED counts failed sign-ins per user name, for everyone: five wrong passwords from anywhere
 * lock the editor for ten minutes, the right password included (answered 500). Here every
 * password sign-in is checked before Node-RED sees it: a wrong one is answered as Node-RED
 * answers it (403 invalid_grant) and counted against the client's address only, so Node-RED's
 * own count never fills up. An address with MAX_FAILURES failures in WINDOW_MS is answered 429
 * with Retry-After until the oldest failure leaves the window; the right password from another
 * address still works.
 */
const MAX_FAILURES = 5;
const WINDOW_MS = 60 * 1000;
const MAX_ADDRESSES = 10000;
const MAX_BODY_BYTES = 64 * 1024;
const failures = new Map(); // address -> times of recent failures (ms), oldest first

function recentFailures(address, now) {
    const times = (failures.get(address) || []).filter((time) => time > now - WINDOW_MS);
    if (times.length) {
        failures.set(address, times);
    } else {
        failures.delete(address);
    }
    return times;
}

function recordFailure(address, now) {
    const times = recentFailures(address, now);
    times.push(now);
    failures.delete(address); // inserted again: the map stays ordered by latest failure
    failures.set(address, times.slice(-MAX_FAILURES));
    for (const key of failures.keys()) {
        if (failures.size <= MAX_ADDRESSES) {
            break;
        }
        failures.delete(key); // memory is bounded: the longest quiet addresses go first
    }
}

class TooLarge extends Error {}

/** Reads and parses the form or JSON body (Node-RED's own parsers then leave it as it is). */
function readBody(req) {
    return new Promise((resolve, reject) => {
        const chunks = [];
        let size = 0;
        req.on("data", (chunk) => {
            size += chunk.length;
            if (size > MAX_BODY_BYTES) {
                reject(new TooLarge()); // the rest is read and dropped; the answer says why
                return;
            }
            chunks.push(chunk);
        });
        req.on("end", () => {
            const text = Buffer.concat(chunks).toString("utf8");
            try {
                if ((req.headers["content-type"] || "").includes("application/json")) {
                    resolve(text ? JSON.parse(text) : {});
                } else {
                    resolve(Object.fromEntries(new URLSearchParams(text)));
                }
            } catch (error) {
                reject(error);
            }
        });
        req.on("error", reject);
    });
}

function signInGuard(req, res, next) {
    if (req.method !== "POST" || req.path !== "/auth/token") {
        next();
        return;
    }
    const address = req.socket.remoteAddress || "";
    const now = Date.now();
    const recent = recentFailures(address, now);
    if (recent.length >= MAX_FAILURES) {
        const wait = Math.max(1, Math.ceil((recent[0] + WINDOW_MS - now) / 1000));
        res.set("Retry-After", String(wait));
        res.status(429).json({
            error: "too_many_attempts",
            error_description: `Too many failed sign-ins from this address. Try again in ${wait} s.`,
        });
        return;
    }
    readBody(req)
        .then((body) => {
            if (body === null || typeof body !== "object" || Array.isArray(body)) {
                throw new Error("the body is not a form or a JSON object");
            }
            req.body = body;
            req._body = true; // body-parser: already parsed
            if (body.grant_type === "password") {
                if (body.username !== "admin" || !samePassword(body.password || "")) {
                    recordFailure(address, now);
                    res.status(403).json({
                        error: "invalid_grant",
                        error_description: "Invalid resource owner credentials",
                    });
                    return;
                }
                failures.delete(address);
            }
            next();
        })
        .catch((error) => {
            // Whatever the body holds, answer; never leave a rejection unhandled (it ends Node-RED).
            if (res.headersSent) {
                return;
            }
            const large = error instanceof TooLarge;
            res.set("Connection", "close");
            res.status(large ? 413 : 400).json({
                error: "invalid_request",
                error_description: large ? `request body over ${MAX_BODY_BYTES} bytes` : "unreadable request body",
            });
        });
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

    // Editor and admin API: one user, "admin", password NODERED_ADMIN_PASSWORD, sign-ins
    // throttled per client address (signInGuard above).
    httpAdminMiddleware: signInGuard,
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

    // The rules keep what they know of devices (when each was last heard, which alarms are
    // raised) in the "disk" store: the user directory's context/ folder, written every 5 s and at
    // a clean stop, so a restart does not forget which devices fell silent. The rest (the broker
    // connection, the rules read at start) is memory, rebuilt at each start.
    contextStorage: {
        default: { module: "memory" },
        disk: { module: "localfilesystem", config: { flushInterval: 5 } },
    },

    functionExternalModules: false,
    exportGlobalContextKeys: false,
    logging: {
        console: { level: "info", metrics: false, audit: false },
    },
};
