#!/bin/sh
# Runs once, on the first start of the compose PostgreSQL (docker-entrypoint-initdb.d).
# Same layout as scripts/pg-harness: database clau, schema per service, owned by its role.
set -eu
auth_pw=$(cat /run/secrets/auth-db-password)
broker_pw=$(cat /run/secrets/broker-db-password)
psql -v ON_ERROR_STOP=1 -U postgres -d postgres \
  -v auth_pw="$auth_pw" -v broker_pw="$broker_pw" <<'SQL'
CREATE ROLE clau_auth LOGIN PASSWORD :'auth_pw';
CREATE ROLE clau_broker LOGIN PASSWORD :'broker_pw';
CREATE DATABASE clau;
\connect clau
REVOKE ALL ON DATABASE clau FROM PUBLIC;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT CONNECT ON DATABASE clau TO clau_auth, clau_broker;
CREATE SCHEMA auth AUTHORIZATION clau_auth;
CREATE SCHEMA broker AUTHORIZATION clau_broker;
ALTER ROLE clau_auth SET search_path = auth;
ALTER ROLE clau_broker SET search_path = broker;
SQL
