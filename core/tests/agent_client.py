"""Drive the core's MCP endpoint with the official MCP Python SDK (`mcp`).

Run by core/tests/agent.rs:  agent_client.py MODE URL OBSERVE_TOKEN MUTATE_TOKEN OUT.json
MODE main:   initialize, tools/list (schemas), every observe tool (results
             validated against the declared output schemas with jsonschema),
             bad input, propose -> apply -> rollback.
MODE limits: rate limit, mutation budget, query time budget.
MODE live:   over TLS (CA file in WIREFOLD_MCP_CA): a proposal evaluated live
             in shadow over the next batches, refused while evaluating, then
             applied.
Writes what it saw as JSON to OUT.json for the Rust side to compare with SQLite.
"""
import asyncio
import contextlib
import json
import os
import ssl
import sys

try:
    import httpx2 as httpx
except ImportError:  # older SDKs use httpx
    import httpx
import jsonschema
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

OBSERVE_TOOLS = [
    "list_sensors", "query_flows", "top_talkers", "recent_anomalies", "similar_flows",
    "gate_status", "explain_decision", "verify_ledger", "metrics_snapshot", "proposal_status",
]
MUTATE_TOOLS = ["propose_gate_change", "apply_proposal", "rollback_gates"]


def client(token):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    ca = os.environ.get("WIREFOLD_MCP_CA")
    verify = ssl.create_default_context(cafile=ca) if ca else True
    return httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(30.0, read=90.0), verify=verify)


class Session:
    def __init__(self, url, token):
        self.url, self.token = url, token

    async def __aenter__(self):
        self.stack = contextlib.AsyncExitStack()
        await self.stack.__aenter__()
        http = await self.stack.enter_async_context(client(self.token))
        r, w = await self.stack.enter_async_context(streamable_http_client(self.url, http_client=http))
        self.s = await self.stack.enter_async_context(ClientSession(r, w))
        await self.s.initialize()
        listed = await self.s.list_tools()
        self.tools = {t.name: t for t in listed.tools}
        return self

    async def __aexit__(self, *a):
        return await self.stack.__aexit__(*a)

    async def call(self, name, args):
        r = await self.s.call_tool(name, args)
        text = r.content[0].text if r.content else ""
        if attr(r, "is_error", "isError"):
            return {"error": text}
        schema = attr(self.tools[name], "output_schema", "outputSchema")
        structured = attr(r, "structured_content", "structuredContent")
        jsonschema.validate(structured, schema)
        return {"result": structured}


def attr(o, *names):
    """The SDK's field names: snake_case in mcp 2.x, camelCase in 1.x."""
    for n in names:
        if hasattr(o, n):
            return getattr(o, n)
    raise AttributeError(names)


async def main_mode(url, obs, mut, out):
    res = {}
    async with Session(url, obs) as s:
        res["tools"] = {
            n: {"input": attr(t, "input_schema", "inputSchema"), "output": attr(t, "output_schema", "outputSchema"),
                "read_only": attr(t.annotations, "read_only_hint", "readOnlyHint") if t.annotations else None}
            for n, t in s.tools.items()
        }
        for n in OBSERVE_TOOLS + MUTATE_TOOLS:
            assert n in s.tools, f"tools/list lacks {n}"
            out_schema = attr(s.tools[n], "output_schema", "outputSchema")
            assert out_schema, f"{n} has no outputSchema"
            jsonschema.Draft202012Validator.check_schema(attr(s.tools[n], "input_schema", "inputSchema"))
            jsonschema.Draft202012Validator.check_schema(out_schema)
        calls = {
            "list_sensors": {},
            "query_flows": {"sensor": "edge-1", "since_ns": 1_700_000_010_000_000_000, "until_ns": 1_700_000_020_000_000_000, "port": 443, "limit": 50},
            "query_flows_cidr": {"addr": "10.1.0.0/16", "decision": "promoted", "min_score": 0.5, "limit": 1000},
            "query_flows_tls": {"app": "tls", "server_name": "*.example.com", "ja4": "t13d1516h2_8daaf6152771_e5627efa2ab1", "limit": 1000},
            "query_flows_sni": {"server_name": "s1.example.com", "limit": 1000},
            "query_flows_nojs": {"ja4": "t13d1516h2_000000000000_000000000000", "limit": 10},
            "top_talkers": {"by": "dst", "limit": 5},
            "recent_anomalies": {"sensor": "edge-2", "limit": 10},
            "similar_flows": {"flow": {"sensor_id": "edge-1", "seq": 3, "idx": 7}, "k": 5},
            "similar_flows_vec": {"vector": [5] * 32, "k": 8, "metric": "l2", "since_ns": 1_700_000_005_000_000_000},
            "gate_status": {},
            "explain_decision": {"sensor_id": "edge-1", "seq": 3, "idx": 7},
            "verify_ledger": {},
            "metrics_snapshot": {"prefix": "wirefold_core_promotions"},
        }
        res["calls"] = {}
        for key, args in calls.items():
            tool = key.removesuffix("_cidr").removesuffix("_vec").removesuffix("_tls").removesuffix("_sni").removesuffix("_nojs")
            r = await s.call(tool, args)
            assert "result" in r, f"{key}: {r}"
            res["calls"][key] = {"args": args, **r}
        # Bad input.
        bad = {}
        try:
            await s.s.call_tool("no_such_tool", {})
            bad["unknown_tool"] = "no error"
        except Exception as e:  # MCPError
            bad["unknown_tool"] = str(e)
        bad["schema_type"] = await s.call("query_flows", {"limit": "many"})
        bad["schema_range"] = await s.call("query_flows", {"port": 70000})
        bad["schema_unknown"] = await s.call("query_flows", {"country": "NL"})
        bad["schema_required"] = await s.call("explain_decision", {"sensor_id": "edge-1", "seq": 1})
        bad["observe_mutates"] = await s.call("rollback_gates", {"version": 1})
        res["bad"] = bad
    # No token: HTTP 401.
    async with client(None) as h:
        r = await h.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                         headers={"Accept": "application/json, text/event-stream"})
        res["no_token_status"] = r.status_code
    async with client("wrong-token-123") as h:
        r = await h.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                         headers={"Accept": "application/json, text/event-stream"})
        res["wrong_token_status"] = r.status_code
    # Propose -> apply -> rollback.
    async with Session(url, mut) as s:
        st = (await s.call("gate_status", {}))["result"]
        base = st["version"]
        p = await s.call("propose_gate_change", {"gate": "score", "key": "threshold", "value": 0.9, "batches": 10, "over": "stored"})
        assert "result" in p, p
        a = await s.call("apply_proposal", {"proposal_id": p["result"]["proposal_id"]})
        assert "result" in a, a
        after_apply = (await s.call("gate_status", {}))["result"]
        rb = await s.call("rollback_gates", {"version": base})
        assert "result" in rb, rb
        after_rb = (await s.call("gate_status", {}))["result"]
        res["mutate"] = {"base": base, "propose": p["result"], "apply": a["result"], "rollback": rb["result"],
                         "threshold_after_apply": after_apply["config"]["score"]["threshold"],
                         "threshold_after_rollback": after_rb["config"]["score"]["threshold"],
                         "version_after_rollback": after_rb["version"]}
    json.dump(res, open(out, "w"), indent=1)


async def limits_mode(url, obs, mut, out):
    res = {}
    async with Session(url, mut) as s:
        # Query time budget (the core under test has a zero budget).
        res["budget"] = await s.call("top_talkers", {})
        # Mutation budget of 1 per hour: the first rollback passes, the second is refused.
        st = (await s.call("gate_status", {}))["result"]
        res["mut1"] = await s.call("rollback_gates", {"version": st["version"]})
        res["mut2"] = await s.call("rollback_gates", {"version": st["version"]})
    async with Session(url, obs) as s:
        seen = []
        for _ in range(12):
            seen.append(await s.call("list_sensors", {}))
        res["rate"] = seen
    json.dump(res, open(out, "w"), indent=1)


async def live_mode(url, obs, mut, out):
    res = {}
    async with Session(url, mut) as s:
        p = await s.call("propose_gate_change", {"gate": "score", "key": "threshold", "value": 0.9, "batches": 5})
        assert "result" in p, p
        res["propose"] = p["result"]
        pid = p["result"]["proposal_id"]
        res["apply_early"] = await s.call("apply_proposal", {"proposal_id": pid})
        res["status_early"] = await s.call("proposal_status", {"proposal_id": pid})
        open(out + ".ready", "w").close()  # the test sends batches now
        res["status"] = await s.call("proposal_status", {"proposal_id": pid, "wait_ms": 60000})
        res["apply"] = await s.call("apply_proposal", {"proposal_id": pid})
        res["after"] = (await s.call("gate_status", {}))["result"]
        res["tls_metric"] = (await s.call("metrics_snapshot", {"prefix": "wirefold_core_agent_tls"}))["result"]
    json.dump(res, open(out, "w"), indent=1)


if __name__ == "__main__":
    mode, url, obs, mut, out = sys.argv[1:6]
    asyncio.run({"main": main_mode, "limits": limits_mode, "live": live_mode}[mode](url, obs, mut, out))
