"""Everything that starts or wires processes: the ``bmfl`` command line, the local stack
and ``bmfl up``, the demo, the deployer, the topology and the publisher's client. It sits
above the services and imports them; nothing below imports it (docs/architecture.md)."""
