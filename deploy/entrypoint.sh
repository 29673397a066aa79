#!/bin/sh
# Entry point of the BMFL image: for every BMFL_*_FILE variable (a compose or Docker
# secret mounted as a file), export BMFL_* with the file's content, then run the command
# (python -m cloud_aggregator | edge_node | vehicle_client | launcher.deployer, bmfl …).
set -eu
for name in $(env | sed -n 's/^\(BMFL_[A-Za-z0-9_]*\)_FILE=.*/\1/p'); do
  file=$(printenv "${name}_FILE")
  value=$(cat "$file")
  export "$name=$value"
  unset "${name}_FILE"
done
exec "$@"
