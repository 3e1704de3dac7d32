"""MCP servers written with the real `mcp` SDK, started by tests/test_mcp.py and bench/mcp_call.py
over stdio (as a program) or streamable HTTP (on 127.0.0.1)."""
