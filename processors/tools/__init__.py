"""Server-side tools: the tool port and its policies, the tools file, credentials, and the MCP adapter."""
