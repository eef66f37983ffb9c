#!/usr/bin/env bash
# `make certs`: a local CA and a certificate signed by it, for HTTPS on this machine.
#   scripts/certs.sh [dir] [name...]      default: certs/ for localhost, 127.0.0.1 and ::1
# Writes ca.pem (trust this), ca-key.pem (never leaves this folder), fullchain.pem + privkey.pem
# (what nginx serves: shared/compose/tls.yaml mounts the folder). Keeps an existing CA, so a
# browser that trusts it keeps trusting new certificates; replaces the server certificate.
# openssl does the crypto; ECDSA P-256 keys, as in Mozilla's guideline.
set -euo pipefail

dir=${1:-certs}
shift || true
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(localhost 127.0.0.1 ::1)
command -v openssl >/dev/null || { echo "certs: openssl is missing (apt-get install openssl)" >&2; exit 1; }

san=()
for name in "${names[@]}"; do
  if [[ $name =~ ^[0-9]+(\.[0-9]+){3}$ || $name == *:* ]]; then
    san+=("IP:$name")
  elif [[ $name =~ ^[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]]; then
    san+=("DNS:$name")
  else
    echo "certs: '$name' is neither a host name nor an IP address" >&2
    exit 2
  fi
done
san_list=$(IFS=,; echo "${san[*]}")

mkdir -p "$dir"
umask 077   # keys are written private; the served key is opened up below, on purpose
if [ ! -s "$dir/ca.pem" ] || [ ! -s "$dir/ca-key.pem" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -keyout "$dir/ca-key.pem" -out "$dir/ca.pem" -subj "/O=flask-stacks/CN=flask-stacks local CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  created_ca=1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$tmp/privkey.pem" -out "$tmp/req.csr" -subj "/CN=${names[0]}" 2>/dev/null
# 365 days: inside the 398 days browsers accept and Mozilla's intermediate lifespan
openssl x509 -req -in "$tmp/req.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" \
  -CAcreateserial -CAserial "$tmp/ca.srl" -days 365 -sha256 -out "$tmp/cert.pem" \
  -extfile <(printf '%s\n' \
    "subjectAltName=$san_list" \
    "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth" \
    "subjectKeyIdentifier=hash" \
    "authorityKeyIdentifier=keyid") 2>/dev/null   # X509_STRICT verifiers (Python 3.13) need it
# nginx runs as uid 101 (10001 in single-container): this throwaway local key must be readable
# by it. A real key: chown it to that uid instead (docs/https.md).
chmod 0644 "$tmp/privkey.pem"
cat "$tmp/cert.pem" >"$tmp/fullchain.pem"   # a chain of one: the local CA is the trust anchor
chmod 0644 "$tmp/fullchain.pem" "$dir/ca.pem"
mv "$tmp/privkey.pem" "$dir/privkey.pem"
mv "$tmp/fullchain.pem" "$dir/fullchain.pem"

echo "certs: $dir/fullchain.pem + privkey.pem for ${names[*]}, signed by $dir/ca.pem${created_ca:+ (new CA)}"
cat <<EOF
Trust the CA to browse without warnings (remove it again when done):
  curl:           curl --cacert $dir/ca.pem https://localhost:8443/
  Python:         requests.get(url, verify="$dir/ca.pem")
  Debian/Ubuntu:  sudo cp $dir/ca.pem /usr/local/share/ca-certificates/flask-stacks.crt && sudo update-ca-certificates
  macOS:          sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain $dir/ca.pem
  Firefox:        Settings > Privacy & Security > Certificates > View Certificates > Authorities > Import
EOF
