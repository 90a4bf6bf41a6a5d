#!/usr/bin/env python3
"""The golden cases for /api/v1, sent in order to a headscale on loopback (see record.sh).

Usage: record_cases.py BASE_URL ADMIN_API_KEY OUT_DIR [VERSION]

Each case becomes OUT_DIR/<name>.json:
  {"seq", "name", "about",
   "request": {"method", "path", "auth", "body" | "rawBody", "contentType"?},
   "generate": {var: kind}, "capture": {var: {"pointer", "transform"?}},
   "sent": {"path", "body"},            # what this recording actually sent
   "status", "headers": {"content-type"}, "body"}
Templates: "{{var}}" is a generated or captured value, "{{time:+N}}" is now plus N seconds
(RFC 3339, UTC). "auth" is "admin", "none", "basic", "garbage", "unknown" or "var:NAME" (a
captured API key). tests/api_contract.rs replays the same templates against our server.
"""

import json
import os
import random
import re
import string
import sys
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

BASE, ADMIN_KEY, OUT = sys.argv[1], sys.argv[2], sys.argv[3]
VERSION = sys.argv[4] if len(sys.argv) > 4 else ""
assert BASE.startswith("http://127.0.0.1:"), "loopback only"

# A key that has the right shape but was never issued.
UNKNOWN_API_KEY = "hskey-api-AAAAAAAAAAAA-" + "B" * 64
POLICY = json.dumps(
    {
        "tagOwners": {"tag:server": ["alice@", "robert@"], "tag:web": ["alice@"]},
        "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
    },
    indent=2,
)

CASES = []


def case(name, method, path, body=None, *, raw=None, auth="admin", about="",
         generate=None, capture=None, content_type=None):
    req = {"method": method, "path": path, "auth": auth}
    if raw is not None:
        req["rawBody"] = raw
    elif body is not None:
        req["body"] = body
    if content_type:
        req["contentType"] = content_type
    CASES.append({"name": name, "about": about, "request": req,
                  "generate": generate or {}, "capture": capture or {}})


def authid():
    alphabet = string.ascii_letters + string.digits + "-_"
    return "hskey-authreq-" + "".join(random.choice(alphabet) for _ in range(24))


def define_cases():
    # --- public endpoints (main listener, no auth) -------------------------------------
    case("public.health", "GET", "/health", auth="none")
    case("public.version", "GET", "/version", auth="none")
    case("public.robots", "GET", "/robots.txt", auth="none")

    # --- authentication ------------------------------------------------------------------
    case("auth.missing", "GET", "/api/v1/user", auth="none", about="no Authorization header")
    case("auth.not_bearer", "GET", "/api/v1/user", auth="basic", about="Basic instead of Bearer")
    case("auth.garbage", "GET", "/api/v1/user", auth="garbage", about="Bearer with a non-key")
    case("auth.unknown_key", "GET", "/api/v1/user", auth="unknown",
         about="well-formed key that was never issued")
    case("auth.health_needs_key", "GET", "/api/v1/health", auth="none")

    case("health.get", "GET", "/api/v1/health")

    # --- users ---------------------------------------------------------------------------
    case("user.list.empty", "GET", "/api/v1/user")
    case("user.create", "POST", "/api/v1/user",
         {"name": "alice", "displayName": "Alice Example", "email": "alice@example.com",
          "pictureUrl": "https://example.com/alice.png"},
         capture={"alice": {"pointer": "/user/id"}})
    case("user.create.minimal", "POST", "/api/v1/user", {"name": "bob"},
         capture={"bob": {"pointer": "/user/id"}})
    case("user.create.unknown_field", "POST", "/api/v1/user",
         {"name": "carol", "bogusField": 1, "nested": {"x": [1, 2]}},
         about="unknown fields in a body are ignored",
         capture={"carol": {"pointer": "/user/id"}})
    case("user.create.duplicate", "POST", "/api/v1/user", {"name": "alice"})
    case("user.create.malformed", "POST", "/api/v1/user", raw='{"name": "dave"',
         about="truncated JSON")
    case("user.create.wrong_type", "POST", "/api/v1/user", {"name": 5})
    case("user.create.not_object", "POST", "/api/v1/user", raw='["dave"]')
    case("user.list", "GET", "/api/v1/user")
    case("user.list.by_name", "GET", "/api/v1/user?name=alice")
    case("user.list.by_id", "GET", "/api/v1/user?id={{bob}}")
    case("user.list.by_email", "GET", "/api/v1/user?email=alice%40example.com")
    case("user.list.by_name.unknown", "GET", "/api/v1/user?name=nobody")
    case("user.list.by_id.unknown", "GET", "/api/v1/user?id=9999")
    case("user.list.by_id.invalid", "GET", "/api/v1/user?id=abc")
    case("user.list.unknown_param", "GET", "/api/v1/user?bogus=1")
    case("user.rename", "POST", "/api/v1/user/{{bob}}/rename/robert")
    case("user.rename.unknown", "POST", "/api/v1/user/9999/rename/zed")
    case("user.rename.conflict", "POST", "/api/v1/user/{{bob}}/rename/alice")
    case("user.rename.invalid_id", "POST", "/api/v1/user/abc/rename/zed")
    case("user.delete", "DELETE", "/api/v1/user/{{carol}}")
    case("user.delete.unknown", "DELETE", "/api/v1/user/9999")
    case("user.delete.invalid_id", "DELETE", "/api/v1/user/abc")

    # --- policy (before tags: tag owners must exist) ----------------------------------------
    case("policy.get.unset", "GET", "/api/v1/policy")
    case("policy.set", "PUT", "/api/v1/policy", {"policy": POLICY})
    case("policy.get", "GET", "/api/v1/policy")
    case("policy.set.invalid_json", "PUT", "/api/v1/policy", {"policy": "{ not json"})
    case("policy.set.unknown_user", "PUT", "/api/v1/policy",
         {"policy": json.dumps({"acls": [{"action": "accept", "src": ["nobody@"],
                                           "dst": ["*:*"]}]})})
    case("policy.set.restore", "PUT", "/api/v1/policy", {"policy": POLICY})
    case("policy.set.bad_action", "PUT", "/api/v1/policy",
         {"policy": json.dumps({"acls": [{"action": "allow", "src": ["*"], "dst": ["*:*"]}]})})
    case("policy.set.malformed_body", "PUT", "/api/v1/policy", raw='{"policy": ')
    case("policy.check.valid", "POST", "/api/v1/policy/check", {"policy": POLICY})
    case("policy.check.invalid", "POST", "/api/v1/policy/check", {"policy": "{ not json"})
    case("policy.check.unknown_tag", "POST", "/api/v1/policy/check",
         {"policy": json.dumps({"acls": [{"action": "accept", "src": ["tag:nope"],
                                           "dst": ["*:*"]}]})})
    case("policy.get.after_invalid", "GET", "/api/v1/policy",
         about="refused policies leave the stored one unchanged")

    # --- pre-auth keys -------------------------------------------------------------------
    case("preauthkey.list.empty", "GET", "/api/v1/preauthkey")
    case("preauthkey.create", "POST", "/api/v1/preauthkey",
         {"user": "{{alice}}", "reusable": True, "ephemeral": False,
          "expiration": "{{time:+7200}}"},
         capture={"pak1": {"pointer": "/preAuthKey/id"}})
    case("preauthkey.create.ephemeral", "POST", "/api/v1/preauthkey",
         {"user": "{{bob}}", "ephemeral": True, "expiration": "{{time:+3600}}"},
         capture={"pak2": {"pointer": "/preAuthKey/id"}})
    case("preauthkey.create.tagged", "POST", "/api/v1/preauthkey",
         {"reusable": True, "aclTags": ["tag:server", "tag:web"],
          "expiration": "{{time:+3600}}"},
         capture={"pak3": {"pointer": "/preAuthKey/id"}})
    case("preauthkey.create.user_and_tags", "POST", "/api/v1/preauthkey",
         {"user": "{{alice}}", "aclTags": ["tag:server"], "expiration": "{{time:+3600}}"},
         capture={"pak4": {"pointer": "/preAuthKey/id"}})
    case("preauthkey.create.user_number", "POST", "/api/v1/preauthkey",
         {"user": 9999}, about="ids may be JSON numbers; this one names no user")
    case("preauthkey.create.bad_tag", "POST", "/api/v1/preauthkey",
         {"user": "{{alice}}", "aclTags": ["server"]})
    case("preauthkey.create.upper_tag", "POST", "/api/v1/preauthkey",
         {"user": "{{alice}}", "aclTags": ["tag:Server"]})
    case("preauthkey.create.unknown_user", "POST", "/api/v1/preauthkey", {"user": "9999"})
    case("preauthkey.create.bad_expiration", "POST", "/api/v1/preauthkey",
         {"user": "{{alice}}", "expiration": "tomorrow"})
    case("preauthkey.create.unknown_field", "POST", "/api/v1/preauthkey",
         {"user": "{{alice}}", "bogus": True, "expiration": "{{time:+3600}}"},
         capture={"pak5": {"pointer": "/preAuthKey/id"}})
    case("preauthkey.list", "GET", "/api/v1/preauthkey")
    case("preauthkey.expire", "POST", "/api/v1/preauthkey/expire", {"id": "{{pak2}}"})
    case("preauthkey.expire.unknown", "POST", "/api/v1/preauthkey/expire", {"id": "9999"})
    case("preauthkey.expire.missing_id", "POST", "/api/v1/preauthkey/expire", {})
    case("preauthkey.delete", "DELETE", "/api/v1/preauthkey?id={{pak5}}")
    case("preauthkey.delete.unknown", "DELETE", "/api/v1/preauthkey?id=9999")
    case("preauthkey.list.after", "GET", "/api/v1/preauthkey")

    # --- API keys ------------------------------------------------------------------------
    case("apikey.list.initial", "GET", "/api/v1/apikey")
    case("apikey.create", "POST", "/api/v1/apikey", {"expiration": "{{time:+7200}}"},
         capture={"key2": {"pointer": "/apiKey"},
                  "key2prefix": {"pointer": "/apiKey", "transform": "apikey_prefix"}})
    case("apikey.create.default", "POST", "/api/v1/apikey", {},
         capture={"key3": {"pointer": "/apiKey"},
                  "key3prefix": {"pointer": "/apiKey", "transform": "apikey_prefix"}})
    case("apikey.create.bad_expiration", "POST", "/api/v1/apikey", {"expiration": "soon"})
    case("apikey.list", "GET", "/api/v1/apikey")
    case("apikey.use_new", "GET", "/api/v1/user?name=alice", auth="var:key2",
         about="a freshly created key authenticates")
    case("apikey.expire", "POST", "/api/v1/apikey/expire", {"prefix": "{{key2prefix}}"})
    case("auth.expired_key", "GET", "/api/v1/user", auth="var:key2")
    case("apikey.expire.unknown", "POST", "/api/v1/apikey/expire", {"prefix": "nosuchprefix"})
    case("apikey.expire.neither", "POST", "/api/v1/apikey/expire", {})
    case("apikey.expire.both", "POST", "/api/v1/apikey/expire",
         {"prefix": "{{key3prefix}}", "id": "1"})
    case("apikey.delete", "DELETE", "/api/v1/apikey/{{key3prefix}}")
    case("auth.deleted_key", "GET", "/api/v1/user", auth="var:key3")
    case("apikey.delete.unknown", "DELETE", "/api/v1/apikey/nosuchprefix")
    case("apikey.list.after", "GET", "/api/v1/apikey")

    # --- nodes -------------------------------------------------------------------------
    case("node.list.empty", "GET", "/api/v1/node")
    case("debug.node.create", "POST", "/api/v1/debug/node",
         {"user": "alice", "key": "{{authid1}}", "name": "laptop",
          "routes": ["10.1.0.0/24", "192.168.7.0/24"]},
         generate={"authid1": "authid"},
         about="queues a registration under authid1; node/register completes it")
    case("node.list.after_debug", "GET", "/api/v1/node",
         about="the debug node is not a node until it is registered")
    case("node.register", "POST", "/api/v1/node/register?user=alice&key={{authid1}}",
         capture={"node1": {"pointer": "/node/id"}})
    case("debug.node.create.second", "POST", "/api/v1/debug/node",
         {"user": "robert", "key": "{{authid2}}", "name": "server"},
         generate={"authid2": "authid"})
    case("auth.register", "POST", "/api/v1/auth/register",
         {"user": "robert", "authId": "{{authid2}}"},
         capture={"node2": {"pointer": "/node/id"}})
    case("debug.node.create.third", "POST", "/api/v1/debug/node",
         {"user": "alice", "key": "{{authid3}}", "name": "phone"},
         generate={"authid3": "authid"})
    case("auth.reject", "POST", "/api/v1/auth/reject", {"authId": "{{authid3}}"})
    case("debug.node.create.fourth", "POST", "/api/v1/debug/node",
         {"user": "alice", "key": "{{authid4}}", "name": "tablet"},
         generate={"authid4": "authid"})
    case("auth.approve", "POST", "/api/v1/auth/approve", {"authId": "{{authid4}}"})
    case("auth.approve.unknown", "POST", "/api/v1/auth/approve", {"authId": "{{authid5}}"},
         generate={"authid5": "authid"})
    case("auth.approve.invalid", "POST", "/api/v1/auth/approve", {"authId": "nope"})
    case("auth.reject.unknown", "POST", "/api/v1/auth/reject", {"authId": "{{authid5}}"})
    case("auth.register.unknown", "POST", "/api/v1/auth/register",
         {"user": "alice", "authId": "{{authid5}}"})
    case("auth.register.unknown_user", "POST", "/api/v1/auth/register",
         {"user": "nobody", "authId": "{{authid5}}"})
    case("debug.node.create.invalid_key", "POST", "/api/v1/debug/node",
         {"user": "alice", "key": "abc", "name": "x"})
    case("debug.node.create.unknown_user", "POST", "/api/v1/debug/node",
         {"user": "nobody", "key": "{{authid6}}", "name": "x"},
         generate={"authid6": "authid"})
    case("debug.node.create.bad_route", "POST", "/api/v1/debug/node",
         {"user": "alice", "key": "{{authid7}}", "name": "x", "routes": ["nope"]},
         generate={"authid7": "authid"})
    case("node.register.unknown_key", "POST",
         "/api/v1/node/register?user=alice&key={{authid5}}")
    case("node.register.invalid_key", "POST", "/api/v1/node/register?user=alice&key=abc")
    case("node.list", "GET", "/api/v1/node")
    case("node.list.by_user", "GET", "/api/v1/node?user=robert")
    case("node.list.by_user.unknown", "GET", "/api/v1/node?user=nobody")
    case("node.get", "GET", "/api/v1/node/{{node1}}")
    case("node.get.unknown", "GET", "/api/v1/node/9999")
    case("node.get.invalid_id", "GET", "/api/v1/node/abc")
    case("node.rename", "POST", "/api/v1/node/{{node1}}/rename/my-laptop")
    case("node.rename.invalid", "POST", "/api/v1/node/{{node1}}/rename/Bad_Name!")
    case("node.rename.unknown", "POST", "/api/v1/node/9999/rename/whatever")
    case("node.approve_routes", "POST", "/api/v1/node/{{node1}}/approve_routes",
         {"routes": ["10.1.0.0/24"]})
    case("node.approve_routes.exit", "POST", "/api/v1/node/{{node1}}/approve_routes",
         {"routes": ["0.0.0.0/0", "10.1.0.0/24"]})
    case("node.approve_routes.invalid", "POST", "/api/v1/node/{{node1}}/approve_routes",
         {"routes": ["nope"]})
    case("node.approve_routes.unknown", "POST", "/api/v1/node/9999/approve_routes",
         {"routes": []})
    case("node.approve_routes.clear", "POST", "/api/v1/node/{{node1}}/approve_routes",
         {"routes": []})
    case("node.expire.at", "POST", "/api/v1/node/{{node1}}/expire?expiry={{time:+86400}}")
    case("node.expire.disable", "POST", "/api/v1/node/{{node1}}/expire?disableExpiry=true")
    case("node.expire.both", "POST",
         "/api/v1/node/{{node1}}/expire?expiry={{time:+86400}}&disableExpiry=true")
    case("node.expire.unknown", "POST", "/api/v1/node/9999/expire")
    case("node.expire", "POST", "/api/v1/node/{{node1}}/expire", about="expires now")
    case("node.tags", "POST", "/api/v1/node/{{node2}}/tags", {"tags": ["tag:server"]})
    case("node.tags.empty", "POST", "/api/v1/node/{{node2}}/tags", {"tags": []})
    case("node.tags.invalid", "POST", "/api/v1/node/{{node2}}/tags", {"tags": ["server"]})
    case("node.tags.unowned", "POST", "/api/v1/node/{{node2}}/tags", {"tags": ["tag:nope"]})
    case("node.tags.unknown", "POST", "/api/v1/node/9999/tags", {"tags": ["tag:server"]})
    case("node.list.tagged", "GET", "/api/v1/node",
         about="tagged nodes are listed with the tagged-devices user")
    case("node.backfillips.unconfirmed", "POST", "/api/v1/node/backfillips")
    case("node.backfillips", "POST", "/api/v1/node/backfillips?confirmed=true")
    case("node.delete", "DELETE", "/api/v1/node/{{node2}}")
    case("node.delete.unknown", "DELETE", "/api/v1/node/9999")
    case("user.delete.with_nodes", "DELETE", "/api/v1/user/{{alice}}",
         about="alice still owns nodes")

    # --- routing and method errors ---------------------------------------------------------
    case("route.unknown_path", "GET", "/api/v1/nope")
    case("route.wrong_method", "PATCH", "/api/v1/user")
    case("route.wrong_method.delete_policy", "DELETE", "/api/v1/policy")
    case("route.get_on_post_only", "GET", "/api/v1/node/register")

    # --- last: cases where we deliberately differ and that would change later state -------
    case("user.create.empty_body", "POST", "/api/v1/user", raw="")
    case("user.create.empty_name", "POST", "/api/v1/user", {"name": ""})
    case("user.create.invalid_name", "POST", "/api/v1/user", {"name": "Dave Smith!"})
    case("preauthkey.create.no_expiration", "POST", "/api/v1/preauthkey",
         {"user": "{{alice}}"}, about="headscale stores the zero time (already expired)")
    case("apikey.create.past_expiration", "POST", "/api/v1/apikey",
         {"expiration": "{{time:-3600}}"})


def now_plus(seconds):
    t = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def subst(text, vars_):
    def one(m):
        key = m.group(1)
        if key.startswith("time:"):
            return now_plus(int(key[5:]))
        if key not in vars_:
            raise KeyError(f"template variable {key} is not bound")
        return vars_[key]
    return re.sub(r"\{\{([^}]+)\}\}", one, text)


def subst_json(value, vars_):
    if isinstance(value, str):
        return subst(value, vars_)
    if isinstance(value, list):
        return [subst_json(v, vars_) for v in value]
    if isinstance(value, dict):
        return {k: subst_json(v, vars_) for k, v in value.items()}
    return value


def pointer(doc, ptr):
    for part in ptr.strip("/").split("/"):
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def send(method, path, auth, body_bytes, content_type):
    req = urllib.request.Request(BASE + path, data=body_bytes, method=method)
    if body_bytes is not None:
        req.add_header("Content-Type", content_type or "application/json")
    if auth is not None:
        req.add_header("Authorization", auth)
    try:
        with OPENER.open(req, timeout=20) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def main():
    random.seed()
    define_cases()
    vars_ = {}
    names = set()
    for seq, c in enumerate(CASES, start=1):
        assert c["name"] not in names, c["name"]
        names.add(c["name"])
        for var, kind in c["generate"].items():
            assert kind == "authid"
            vars_[var] = authid()
        req = c["request"]
        path = subst(req["path"], vars_)
        sent_body = None
        body_bytes = None
        if "rawBody" in req:
            body_bytes = req["rawBody"].encode()
        elif "body" in req:
            sent_body = subst_json(req["body"], vars_)
            body_bytes = json.dumps(sent_body).encode()
        auth = req["auth"]
        header = {
            "admin": "Bearer " + ADMIN_KEY,
            "none": None,
            "basic": "Basic dXNlcjpwYXNz",
            "garbage": "Bearer not-a-key",
            "unknown": "Bearer " + UNKNOWN_API_KEY,
        }.get(auth)
        if auth.startswith("var:"):
            header = "Bearer " + vars_[auth[4:]]
        status, headers, raw = send(req["method"], path, header, body_bytes,
                                    req.get("contentType"))
        headers = {k.lower(): v for k, v in headers.items()}
        text = raw.decode("utf-8", "replace")
        try:
            body = json.loads(text) if text.strip() else None
            is_json = text.strip() != ""
        except ValueError:
            body, is_json = text, False
        for var, spec in c["capture"].items():
            if status != 200:
                raise SystemExit(f"{c['name']}: cannot capture {var} from status {status}: {text}")
            value = pointer(body, spec["pointer"])
            if spec.get("transform") == "apikey_prefix":
                value = value.split("-")[2]
            vars_[var] = str(value)
        record = {
            "seq": seq,
            "name": c["name"],
            "about": c["about"],
            "recordedWith": VERSION,
            "request": req,
            "generate": c["generate"],
            "capture": c["capture"],
            "sent": {"path": path, "body": sent_body},
            "status": status,
            "headers": {"content-type": headers.get("content-type")},
            "bodyIsJson": is_json,
            "body": body,
        }
        with open(os.path.join(OUT, c["name"] + ".json"), "w") as f:
            json.dump(record, f, indent=2, sort_keys=False)
            f.write("\n")
        print(f"{seq:3} {status} {req['method']:6} {path[:70]}")


main()
