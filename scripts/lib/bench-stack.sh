# Sourced by scripts/edge-bench and scripts/soak: a throwaway stack of release builds (auth, vault,
# broker, edge, fakes) over a throwaway PostgreSQL and a test CA, one user signed in with a linked
# fake Alpaca account. Expects: root, rel (release bin dir), dbg (debug bin dir with clauctl),
# bench_name; optional bench_bcrypt_cost (default 10). Sets: dir, base, token, the *_pid variables and postmaster; removes it all on exit.
dir=$(mktemp -d "/tmp/clau-${bench_name:-bench}.XXXXXX")
chmod 0755 "$dir"   # the PostgreSQL cluster runs as user postgres; keys/ stays 0700
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "$root/scripts/pg-harness" stop "$dir/pg" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
mkdir -p "$dir/run" "$dir/keys" "$dir/mail" && chmod 0700 "$dir/keys"
eval "$("$root/scripts/pg-harness" start "$dir/pg")"
pgsocket="$PGHOST/.s.PGSQL.$PGPORT"
"$dbg/clauctl" migrate --schema auth --socket "$pgsocket" >/dev/null
"$dbg/clauctl" migrate --schema broker --socket "$pgsocket" >/dev/null
"$dbg/clauctl" vault keygen > "$dir/keys/fernet-keys" 2>/dev/null
printf 'fake-alpaca-secret' > "$dir/keys/alpaca-client-secret"
printf 'sk_test_clau_fake' > "$dir/keys/stripe-secret-key"
printf 'whsec_clau_fake' > "$dir/keys/stripe-webhook-secret"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/keys/jwt.pem" 2>/dev/null
head -c 48 /dev/urandom | base64 > "$dir/keys/auth-secret"
cd "$dir/keys"
openssl ecparam -name prime256v1 -genkey -noout -out ca.key
openssl req -x509 -new -key ca.key -sha256 -days 90 -subj "/CN=Bench CA" -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" -out ca.crt
openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out tls.key
openssl req -new -key tls.key -subj /CN=localhost -out tls.csr
printf "subjectAltName=DNS:localhost,IP:127.0.0.1\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n" > ext.cnf
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 90 -extfile ext.cnf -out tls.crt 2>/dev/null
chmod 0400 jwt.pem auth-secret tls.key fernet-keys alpaca-client-secret stripe-secret-key stripe-webhook-secret
cd "$root"
me=$(id -un)
"$rel/clau-auth" --socket "$dir/run/auth.sock" --db-socket "$pgsocket" --signing-key "RS256:bench-1:$dir/keys/jwt.pem" \
  --secret-file "$dir/keys/auth-secret" --mail "maildir:$dir/mail" --edge-user "$me" --bcrypt-cost "${bench_bcrypt_cost:-10}" --log-level warning >"$dir/auth.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -S "$dir/run/auth.sock" ] && break; sleep 0.1; done
fakes=http://127.0.0.1:18099
redirect=http://127.0.0.1:9/v1/alpaca/oauth/callback
# The fake's per-token Alpaca limit and the vault's Decrypt limit (600/min per caller by default)
# are raised: this measures the path, not the limits.
"$rel/clau-fakes" --port 18099 --alpaca-redirect-uri "$redirect" --alpaca-requests-per-minute 100000000 --log-level warning >"$dir/fakes.log" 2>&1 &
pids+=($!)
"$rel/clau-vault" --socket "$dir/run/vault.sock" --key-file "$dir/keys/fernet-keys" --broker-user "$me" \
  --decrypts-per-minute 100000000 --log-level warning >"$dir/vault.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -S "$dir/run/vault.sock" ] && break; sleep 0.1; done
"$rel/clau-broker" --socket "$dir/run/broker.sock" --vault-socket "$dir/run/vault.sock" --db-socket "$pgsocket" --edge-user "$me" \
  --alpaca-api-url $fakes --alpaca-token-url $fakes/oauth/token --alpaca-authorize-url $fakes/oauth/authorize \
  --alpaca-client-id fake-alpaca-client --alpaca-client-secret-file "$dir/keys/alpaca-client-secret" --alpaca-redirect-uri $redirect \
  --stripe-api-url $fakes --stripe-secret-key-file "$dir/keys/stripe-secret-key" --stripe-webhook-secret-file "$dir/keys/stripe-webhook-secret" \
  --stripe-price price_bench --checkout-success-url https://localhost/paid --checkout-cancel-url https://localhost/cancelled \
  --log-level warning >"$dir/broker.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -S "$dir/run/broker.sock" ] && break; sleep 0.1; done
"$rel/clau-edge" --host 127.0.0.1 --port 18443 --redirect-port 0 --tls-certificate "$dir/keys/tls.crt" --tls-key "$dir/keys/tls.key" \
  --auth-socket "$dir/run/auth.sock" --broker-socket "$dir/run/broker.sock" --rate-limit-multiplier 100000 --metrics-port 18464 --log-level warning >"$dir/edge.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf --cacert "$dir/keys/ca.crt" https://localhost:18443/readyz >/dev/null && break; sleep 0.1; done
base=https://localhost:18443
curl -sf --cacert "$dir/keys/ca.crt" -H 'Content-Type: application/json' -d '{"email":"bench@example.com","password":"Tq7!vexing-Walrus-orbit","full_name":"Bench"}' $base/v1/auth/register >/dev/null
token=$(curl -sf --cacert "$dir/keys/ca.crt" -H 'Content-Type: application/json' -d '{"email":"bench@example.com","password":"Tq7!vexing-Walrus-orbit"}' $base/v1/auth/login | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
curl -sf --cacert "$dir/keys/ca.crt" -H "Authorization: Bearer $token" $base/v1/me >/dev/null
# Link the bench user's fake Alpaca account (the flow scripts/dev-up prints).
url=$(curl -sf --cacert "$dir/keys/ca.crt" -H "Authorization: Bearer $token" $base/v1/alpaca/oauth/authorize-url | python3 -c 'import json,sys; print(json.load(sys.stdin)["url"])')
location=$(curl -s -o /dev/null -w '%{redirect_url}' "$url")
grant=$(python3 -c 'import json,sys,urllib.parse as u; q=u.parse_qs(u.urlsplit(sys.argv[1]).query); print(json.dumps({"code": q["code"][0], "state": q["state"][0]}))' "$location")
curl -sf --cacert "$dir/keys/ca.crt" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d "$grant" $base/v1/alpaca/oauth/callback >/dev/null
curl -sf --cacert "$dir/keys/ca.crt" -H "Authorization: Bearer $token" $base/v1/alpaca/account >/dev/null
auth_pid=${pids[0]}; fakes_pid=${pids[1]}; vault_pid=${pids[2]}; broker_pid=${pids[3]}; edge_pid=${pids[4]}
postmaster=$(head -1 "$dir/pg/data/postmaster.pid")
