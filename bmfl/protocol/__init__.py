"""What the services say to each other: REST schemas, signed messages and the
publisher's test-set format. Edges, cloud, vehicles and auditors import it from here."""
