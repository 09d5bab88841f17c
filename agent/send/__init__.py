"""Send mode: the agent places the request it signed (agent.send.sender), over HTTPS (agent.send.transport),
to the exchange's host (agent.send.hosts), and never sends an order twice (agent.send.orders)."""
