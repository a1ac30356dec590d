#!/bin/sh
# Makes the TLS files of deploy/kubernetes/raftlock.yaml: a CA, one node
# certificate per pod (raftlock-0 is node 1: `raftlock certs node --id 1`)
# named after the pod, and an admin client certificate. DIR/secret/ holds
# exactly the Secret's files; DIR/ca/ keeps the CA key: keep it off the
# cluster. Needs `raftlock` on PATH.
#
#   deploy/kubernetes/certs.sh locks 3 raftlock-certs
#   kubectl -n locks create secret generic raftlock-tls --from-file=raftlock-certs/secret/
#
# crates/raftlock/tests/it/deploy.rs runs it and serves-checks each pod
# with its files.
set -eu
ns=${1:?usage: certs.sh NAMESPACE [REPLICAS] [DIR]}
replicas=${2:-3}
dir=${3:-raftlock-certs}
umask 077
mkdir -p "$dir/ca" "$dir/secret"
raftlock certs ca --dir "$dir/ca"
i=0
while [ "$i" -lt "$replicas" ]; do
  pod="raftlock-$i"
  id=$((i + 1))
  # The names peers, clients and the probe (127.0.0.1) reach the pod by.
  raftlock certs node --id "$id" --dir "$dir/ca" \
    --host "$pod.raftlock.$ns.svc" --host "$pod.raftlock.$ns.svc.cluster.local" \
    --host "raftlock-client.$ns.svc" --host "raftlock-client.$ns.svc.cluster.local" \
    --host localhost --host 127.0.0.1
  cp -p "$dir/ca/node-$id.crt" "$dir/secret/$pod.crt"
  cp -p "$dir/ca/node-$id.key" "$dir/secret/$pod.key"
  i=$((i + 1))
done
cp -p "$dir/ca/ca.crt" "$dir/secret/ca.crt"
raftlock certs client --name admin --dir "$dir/ca"
echo "made $dir/secret/ for: kubectl -n $ns create secret generic raftlock-tls --from-file=$dir/secret/"
