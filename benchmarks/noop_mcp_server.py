"""A real MCP server (the official SDK's) over stdio with one tool that does nothing: what a tool step costs turnlog.

    python benchmarks/noop_mcp_server.py      # turnlog starts it from a tools file
"""

from mcp.server.mcpserver import MCPServer


def main() -> None:
    server = MCPServer("turnlog-benchmark-noop", log_level="WARNING")

    def noop(tag: str = "") -> str:
        """Returns at once."""
        return f"ok {tag}".strip()

    server.add_tool(noop, name="noop")
    server.run("stdio")


if __name__ == "__main__":
    main()
