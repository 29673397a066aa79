"""What every BMFL service shares: settings for chain and blob access, errors as
problem bodies, health and metrics endpoints, and a launcher for local stacks."""
