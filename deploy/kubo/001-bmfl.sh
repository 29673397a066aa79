#!/bin/sh
# Kubo configuration for BMFL, run by the ipfs/kubo image before every daemon start
# (mounted into /container-init.d). The RPC API (5001) and the gateway (8080) listen on
# the container's own interfaces — loopback and the compose network — and compose
# publishes neither port to the host unless an override file does. The node is private:
# no bootstrap peers, no DHT, no mDNS, and the gateway serves local blocks only.
set -eu
ipfs config Addresses.API /ip4/0.0.0.0/tcp/5001
ipfs config Addresses.Gateway /ip4/0.0.0.0/tcp/8080
ipfs config --json Gateway.NoFetch true
ipfs config Routing.Type none
ipfs config --json Discovery.MDNS.Enabled false
ipfs bootstrap rm --all >/dev/null
