"""The tools a user runs: local chat (tools.chat), HTTP client (tools.client), chat page (tools.chat_page),
archive builder (tools.build_mar) and the server-config renderer (tools.server_config)."""
